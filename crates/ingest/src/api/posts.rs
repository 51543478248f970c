//! `shardfeed.v1.PostService`. Not implemented yet: every RPC answers `UNIMPLEMENTED` until the
//! write path for posts (with its outbox and cache warming) lands.

use deadpool_postgres::Pool;
use shardfeed_core::ApiError;
use shardfeed_proto::v1::{
    post_service_server::PostService, CreatePostRequest, CreatePostResponse, DeletePostRequest,
    DeletePostResponse, GetPostRequest, GetPostResponse,
};
use tonic::{Request, Response, Status};

pub struct Posts {
    #[allow(dead_code)]
    pool: Pool,
}

impl Posts {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

#[tonic::async_trait]
impl PostService for Posts {
    async fn create_post(
        &self,
        _: Request<CreatePostRequest>,
    ) -> Result<Response<CreatePostResponse>, Status> {
        Err(ApiError::Unimplemented("PostService.CreatePost").into())
    }

    async fn get_post(
        &self,
        _: Request<GetPostRequest>,
    ) -> Result<Response<GetPostResponse>, Status> {
        Err(ApiError::Unimplemented("PostService.GetPost").into())
    }

    async fn delete_post(
        &self,
        _: Request<DeletePostRequest>,
    ) -> Result<Response<DeletePostResponse>, Status> {
        Err(ApiError::Unimplemented("PostService.DeletePost").into())
    }
}
