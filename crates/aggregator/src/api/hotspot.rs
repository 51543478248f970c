//! `shardfeed.v1.HotspotService`: the hot authors this aggregator sees and acts on, with the
//! counters that show where its reads go.

use shardfeed_proto::v1::{
    hotspot_service_server::HotspotService, GetHotAuthorsRequest, GetHotAuthorsResponse, HotAuthor,
    NearCacheStats, NodeRequests,
};
use shardfeed_server::{paging::page_size, ApiResult};
use tonic::{Request, Response, Status};

use crate::mitigate::HotReads;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

pub struct HotspotApi {
    hot: HotReads,
}

impl HotspotApi {
    pub fn new(hot: HotReads) -> Self {
        Self { hot }
    }

    fn answer(&self, limit: i32) -> ApiResult<GetHotAuthorsResponse> {
        let limit = page_size(limit, DEFAULT_LIMIT, MAX_LIMIT).map_err(|_| {
            shardfeed_server::ApiError::invalid_field("limit", "must not be negative")
        })?;
        let authors = self
            .hot
            .hot_authors(limit)
            .into_iter()
            .map(|a| HotAuthor {
                author_id: a.author_id,
                access_rate: a.rate_per_s,
                owning_node: a.node.unwrap_or_default(),
                slot: i32::from(a.slot),
                mitigations: a.mitigations.into_iter().map(i32::from).collect(),
            })
            .collect();
        let stats = self.hot.stats();
        Ok(GetHotAuthorsResponse {
            authors,
            nodes: stats
                .nodes
                .into_iter()
                .map(|(node, requests)| NodeRequests {
                    node,
                    requests: requests as i64,
                })
                .collect(),
            near_cache: Some(NearCacheStats {
                hits: stats.near_cache.hits as i64,
                misses: stats.near_cache.misses as i64,
                entries: stats.near_cache.entries as i64,
                bytes: stats.near_cache.bytes as i64,
                capacity_bytes: stats.near_cache_capacity as i64,
                invalidations: stats.near_cache.invalidations as i64,
            }),
            coalesced_reads: stats.coalesced as i64,
            replica_reads: stats.replica_reads as i64,
            copy_reads: stats.copy_reads as i64,
        })
    }
}

#[tonic::async_trait]
impl HotspotService for HotspotApi {
    async fn get_hot_authors(
        &self,
        request: Request<GetHotAuthorsRequest>,
    ) -> Result<Response<GetHotAuthorsResponse>, Status> {
        Ok(Response::new(self.answer(request.get_ref().limit)?))
    }
}
