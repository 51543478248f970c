//! `shardfeed.v1.PostService`.

use std::time::Duration;

use deadpool_postgres::Pool;
use shardfeed_proto::ids::{PostId, UserId};
use shardfeed_proto::v1::{
    post_service_server::PostService, CreatePostRequest, CreatePostResponse, DeletePostRequest,
    DeletePostResponse, GetPostRequest, GetPostResponse,
};
use shardfeed_server::auth::Caller;
use shardfeed_server::deadline::Deadline;
use shardfeed_server::error::parse_id;
use tonic::{Request, Response, Status};

use crate::{
    cache_sync::CacheSync,
    domain::{PostBody, RequestId},
    group_commit::PostWriter,
    store::posts::{self, NewPost},
};

pub struct Posts {
    pool: Pool,
    writer: PostWriter,
    cache: CacheSync,
    request_timeout: Duration,
}

impl Posts {
    pub fn new(
        pool: Pool,
        writer: PostWriter,
        cache: CacheSync,
        request_timeout: Duration,
    ) -> Self {
        Self {
            pool,
            writer,
            cache,
            request_timeout,
        }
    }
}

#[tonic::async_trait]
impl PostService for Posts {
    #[tracing::instrument(skip_all, fields(author_id = request.get_ref().author_id))]
    async fn create_post(
        &self,
        request: Request<CreatePostRequest>,
    ) -> Result<Response<CreatePostResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let author_id = parse_id::<UserId>("author_id", request.get_ref().author_id)?.get();
        Caller::check(&request, author_id, "post as the author")?;
        let req = request.into_inner();
        let body = PostBody::parse(&req.body)?;
        let request_id = RequestId::parse_optional(&req.request_id)?;
        let post = NewPost {
            author_id,
            body,
            request_id,
        };
        // Committed and applied to the cache (or left to the relay): acknowledged.
        let post = deadline.run(self.writer.create(post)).await??;
        Ok(Response::new(CreatePostResponse { post: Some(post) }))
    }

    #[tracing::instrument(skip_all, fields(post_id = request.get_ref().post_id))]
    async fn get_post(
        &self,
        request: Request<GetPostRequest>,
    ) -> Result<Response<GetPostResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let post_id = parse_id::<PostId>("post_id", request.get_ref().post_id)?.get();
        let post = deadline.run(posts::get(&self.pool, post_id)).await??;
        Ok(Response::new(GetPostResponse { post: Some(post) }))
    }

    #[tracing::instrument(skip_all, fields(post_id = request.get_ref().post_id))]
    async fn delete_post(
        &self,
        request: Request<DeletePostRequest>,
    ) -> Result<Response<DeletePostResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let post_id = parse_id::<PostId>("post_id", request.get_ref().post_id)?.get();
        let caller = Caller::of(&request)?;
        let may_delete = |author_id| caller.act_as(author_id, "delete a post");
        let written = deadline
            .run(posts::delete(&self.pool, post_id, may_delete))
            .await??;
        self.cache.after_commit(written.pending).await;
        Ok(Response::new(DeletePostResponse {}))
    }
}
