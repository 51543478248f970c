//! `shardfeed.v1.HotspotService`. Not implemented yet: answers `UNIMPLEMENTED` until hot-author
//! detection lands.

use shardfeed_core::ApiError;
use shardfeed_proto::v1::{
    hotspot_service_server::HotspotService, GetHotAuthorsRequest, GetHotAuthorsResponse,
};
use tonic::{Request, Response, Status};

pub struct Hotspots;

#[tonic::async_trait]
impl HotspotService for Hotspots {
    async fn get_hot_authors(
        &self,
        _: Request<GetHotAuthorsRequest>,
    ) -> Result<Response<GetHotAuthorsResponse>, Status> {
        Err(ApiError::Unimplemented("HotspotService.GetHotAuthors").into())
    }
}
