//! `shardfeed.v1.UserService`.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use shardfeed_proto::ids::UserId;
use shardfeed_proto::v1::{
    user_service_server::UserService, CreateUserRequest, CreateUserResponse, DeleteUserRequest,
    DeleteUserResponse, GetUserRequest, GetUserResponse, UpdateUserRequest, UpdateUserResponse,
};
use shardfeed_server::auth::Caller;
use shardfeed_server::deadline::Deadline;
use shardfeed_server::error::parse_id;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use crate::{
    cache_sync::CacheSync,
    domain::{DisplayName, Handle, RequestId},
    store::users,
};

pub struct Users {
    pool: Pool,
    cache: CacheSync,
    request_timeout: Duration,
    /// Wakes the purge of deleted users' posts (`users::purge_deleted_loop`).
    purge: Arc<Notify>,
}

impl Users {
    pub fn new(
        pool: Pool,
        cache: CacheSync,
        request_timeout: Duration,
        purge: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            cache,
            request_timeout,
            purge,
        }
    }
}

#[tonic::async_trait]
impl UserService for Users {
    #[tracing::instrument(skip_all, fields(handle = %request.get_ref().handle))]
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let req = request.into_inner();
        let handle = Handle::parse(&req.handle)?;
        let display_name = DisplayName::parse(&req.display_name)?;
        let request_id = RequestId::parse_optional(&req.request_id)?;
        let written = deadline
            .run(users::create(
                &self.pool,
                &handle,
                &display_name,
                request_id,
            ))
            .await??;
        self.cache.after_commit(written.pending).await;
        let user = written.value;
        tracing::info!(user_id = user.user_id, "user created");
        Ok(Response::new(CreateUserResponse { user: Some(user) }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn get_user(
        &self,
        request: Request<GetUserRequest>,
    ) -> Result<Response<GetUserResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let user_id = parse_id::<UserId>("user_id", request.get_ref().user_id)?.get();
        let user = deadline.run(users::get(&self.pool, user_id)).await??;
        Ok(Response::new(GetUserResponse { user: Some(user) }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn update_user(
        &self,
        request: Request<UpdateUserRequest>,
    ) -> Result<Response<UpdateUserResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let user_id = parse_id::<UserId>("user_id", request.get_ref().user_id)?.get();
        Caller::check(&request, user_id, "update the profile")?;
        let req = request.into_inner();
        let display_name = DisplayName::parse(&req.display_name)?;
        let user = deadline
            .run(users::update_display_name(
                &self.pool,
                user_id,
                &display_name,
            ))
            .await??;
        Ok(Response::new(UpdateUserResponse { user: Some(user) }))
    }

    #[tracing::instrument(skip_all, fields(user_id = request.get_ref().user_id))]
    async fn delete_user(
        &self,
        request: Request<DeleteUserRequest>,
    ) -> Result<Response<DeleteUserResponse>, Status> {
        let deadline = Deadline::of(&request, self.request_timeout);
        let user_id = parse_id::<UserId>("user_id", request.get_ref().user_id)?.get();
        Caller::check(&request, user_id, "delete the account")?;
        let written = deadline.run(users::delete(&self.pool, user_id)).await??;
        self.purge.notify_one();
        self.cache.after_commit(written.pending).await;
        tracing::info!(user_id, "user deleted");
        Ok(Response::new(DeleteUserResponse {}))
    }
}
