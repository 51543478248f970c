//! `shardfeed.v1.FeedService`. Not implemented yet: both RPCs answer `UNIMPLEMENTED` until the
//! read path (per-node pipelined reads, k-way merge, keyset paging) lands.

use deadpool_postgres::Pool;
use fred::clients::Client;
use shardfeed_core::ApiError;
use shardfeed_proto::v1::{
    feed_service_server::FeedService, GetHomeFeedRequest, GetHomeFeedResponse,
    GetUserTimelineRequest, GetUserTimelineResponse,
};
use tonic::{Request, Response, Status};

pub struct Feeds {
    #[allow(dead_code)]
    redis: Client,
    #[allow(dead_code)]
    pool: Pool,
}

impl Feeds {
    pub fn new(redis: Client, pool: Pool) -> Self {
        Self { redis, pool }
    }
}

#[tonic::async_trait]
impl FeedService for Feeds {
    async fn get_home_feed(
        &self,
        _: Request<GetHomeFeedRequest>,
    ) -> Result<Response<GetHomeFeedResponse>, Status> {
        Err(ApiError::Unimplemented("FeedService.GetHomeFeed").into())
    }

    async fn get_user_timeline(
        &self,
        _: Request<GetUserTimelineRequest>,
    ) -> Result<Response<GetUserTimelineResponse>, Status> {
        Err(ApiError::Unimplemented("FeedService.GetUserTimeline").into())
    }
}
