//! What the ingest bench sets up before the load and removes after it: the bench users
//! (through the API), one CreatePost that proves the write path works, and the floor's table.

use anyhow::{anyhow, bail, Context};
use futures::{stream, StreamExt};
use rand::rngs::StdRng;
use rand::SeedableRng;
use shardfeed_proto::v1::{
    post_service_client::PostServiceClient, user_service_client::UserServiceClient,
    CreatePostRequest, CreateUserRequest, DeleteUserRequest,
};
use tonic::Code;

use super::ops::{check_post, make_body};
use super::BARE_TABLE;
use crate::client::{status_text, Channels};

/// How many CreateUser/DeleteUser calls run at once while setting up and cleaning up.
const SETUP_CONCURRENCY: usize = 16;

/// What the bench created and must remove, whatever happens.
#[derive(Default)]
pub struct Created {
    pub users: Vec<i64>,
    /// The connection that created the floor's table, kept to drop it.
    pub table: Option<tokio_postgres::Client>,
}

pub async fn create_users(
    channels: &Channels,
    count: usize,
    created: &mut Created,
) -> anyhow::Result<()> {
    let run_tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    eprintln!("bench ingest: creating {count} bench users (bench_{run_tag}_<i>)");
    let client = UserServiceClient::new(channels.get(0));
    let mut results = stream::iter(0..count)
        .map(|i| {
            let mut client = client.clone();
            let request = CreateUserRequest {
                handle: format!("bench_{run_tag}_{i}"),
                display_name: format!("Bench author {i}"),
                request_id: uuid::Uuid::new_v4().to_string(),
            };
            async move { client.create_user(request).await }
        })
        .buffer_unordered(SETUP_CONCURRENCY);
    let mut failures = Vec::new();
    while let Some(result) = results.next().await {
        match result {
            Ok(response) => match response.into_inner().user {
                Some(user) => created.users.push(user.user_id),
                None => failures.push("CreateUserResponse without a user".to_owned()),
            },
            Err(status) => failures.push(status_text(&status)),
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "creating the bench users: {} of {count} CreateUser calls failed (first: {first})",
            failures.len()
        );
    }
    Ok(())
}

/// One CreatePost before the load: a service that cannot take it stops the bench right here.
pub async fn first_create_post(
    channels: &Channels,
    ingest: &str,
    author_id: i64,
    body_bytes: usize,
) -> anyhow::Result<()> {
    let mut client = PostServiceClient::new(channels.get(0));
    let request = CreatePostRequest {
        author_id,
        body: make_body(&mut StdRng::from_entropy(), body_bytes),
        request_id: uuid::Uuid::new_v4().to_string(),
    };
    match client.create_post(request).await {
        Ok(response) => check_post(response.into_inner().post.as_ref(), author_id).map_err(|e| {
            anyhow!(
                "the first CreatePost answered OK but wrongly ({}): {}",
                e.kind,
                e.message
            )
        }),
        Err(status) if status.code() == Code::Unimplemented => bail!(
            "PostService.CreatePost answers UNIMPLEMENTED at {ingest}: this shardfeed-ingest does \
             not implement the write path yet, so there is nothing to measure over gRPC \
             (`shardfeed bench ingest --only bare` measures the bare-insert floor alone)"
        ),
        Err(status) => bail!(
            "the first CreatePost failed at {ingest}: {:?}: {}",
            status.code(),
            status.message()
        ),
    }
}

/// Creates the floor's table; returns the first free post id (rows left by an interrupted run
/// stay out of the way).
pub async fn create_bare_table(
    client: tokio_postgres::Client,
    created: &mut Created,
) -> anyhow::Result<i64> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {BARE_TABLE} (\
               author_id bigint NOT NULL, post_id bigint NOT NULL, body text NOT NULL, \
               create_time timestamptz NOT NULL, PRIMARY KEY (author_id, post_id))"
        ))
        .await
        .with_context(|| format!("creating {BARE_TABLE}"))?;
    let next: i64 = client
        .query_one(
            &format!("SELECT coalesce(max(post_id), 0) + 1 FROM {BARE_TABLE}"),
            &[],
        )
        .await
        .with_context(|| format!("reading {BARE_TABLE}"))?
        .get(0);
    created.table = Some(client);
    Ok(next)
}

/// Best effort: every failure is reported on stderr, none hides the figures.
pub async fn clean_up(channels: Option<&Channels>, created: Created) {
    // Users are created only through the channels.
    if let Some(channels) = channels.filter(|_| !created.users.is_empty()) {
        eprintln!(
            "bench ingest: deleting the {} bench users",
            created.users.len()
        );
        let client = UserServiceClient::new(channels.get(0));
        let failures: Vec<String> = stream::iter(created.users.iter().copied())
            .map(|user_id| {
                let mut client = client.clone();
                async move {
                    client
                        .delete_user(DeleteUserRequest { user_id })
                        .await
                        .map_err(|s| format!("user {user_id}: {}", status_text(&s)))
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .filter_map(|result| async move { result.err() })
            .collect()
            .await;
        if let Some(first) = failures.first() {
            eprintln!(
                "warning: {} of {} bench users could not be deleted (first: {first})",
                failures.len(),
                created.users.len()
            );
        }
    }
    if let Some(client) = created.table {
        eprintln!("bench ingest: dropping {BARE_TABLE}");
        let dropped = client
            .batch_execute(&format!(
                "SET lock_timeout = '10s'; DROP TABLE IF EXISTS {BARE_TABLE}"
            ))
            .await;
        if let Err(err) = dropped {
            eprintln!("warning: could not drop {BARE_TABLE}: {err:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardfeed_proto::v1::{
        post_service_server::{PostService, PostServiceServer},
        CreatePostResponse, DeletePostRequest, DeletePostResponse, GetPostRequest, GetPostResponse,
        Post,
    };
    use tonic::{Request, Response, Status};

    /// A PostService whose CreatePost answers what the test asks for.
    struct Stub(fn(&CreatePostRequest) -> Result<CreatePostResponse, Status>);

    #[tonic::async_trait]
    impl PostService for Stub {
        async fn create_post(
            &self,
            request: Request<CreatePostRequest>,
        ) -> Result<Response<CreatePostResponse>, Status> {
            (self.0)(request.get_ref()).map(Response::new)
        }
        async fn get_post(
            &self,
            _: Request<GetPostRequest>,
        ) -> Result<Response<GetPostResponse>, Status> {
            Err(Status::unimplemented(""))
        }
        async fn delete_post(
            &self,
            _: Request<DeletePostRequest>,
        ) -> Result<Response<DeletePostResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn serve(stub: Stub) -> Channels {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(socket, _)| socket);
            Some((accepted, listener))
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PostServiceServer::new(stub))
                .serve_with_incoming(incoming),
        );
        let bearer = shardfeed_proto::auth::Bearer::new("stub-token").unwrap();
        Channels::connect(
            &format!("http://{addr}"),
            &crate::client::TlsFlags::default(),
            1,
            "stub",
            &bearer,
        )
        .await
        .unwrap()
    }

    async fn first_call_error(stub: Stub) -> Option<String> {
        let channel = serve(stub).await;
        first_create_post(&channel, "the stub", 7, 100)
            .await
            .err()
            .map(|e| format!("{e:#}"))
    }

    #[tokio::test]
    async fn stops_at_once_when_create_post_is_unimplemented() {
        let err = first_call_error(Stub(|_| Err(Status::unimplemented("not yet"))))
            .await
            .expect("must fail");
        assert!(err.contains("UNIMPLEMENTED"), "{err}");
        assert!(err.contains("--only bare"), "{err}");
    }

    #[tokio::test]
    async fn stops_at_once_on_any_other_error_or_a_wrong_answer() {
        let err = first_call_error(Stub(|_| Err(Status::unavailable("postgres down"))))
            .await
            .expect("must fail");
        assert!(err.contains("Unavailable: postgres down"), "{err}");

        let err = first_call_error(Stub(|_| Ok(CreatePostResponse { post: None })))
            .await
            .expect("must fail");
        assert!(err.contains("without a post"), "{err}");

        let ok = first_call_error(Stub(|request| {
            assert_eq!(request.body.len(), 100);
            assert!(uuid::Uuid::parse_str(&request.request_id).is_ok());
            Ok(CreatePostResponse {
                post: Some(Post {
                    post_id: 1,
                    author_id: request.author_id,
                    body: request.body.clone(),
                    create_time: None,
                }),
            })
        }))
        .await;
        assert_eq!(ok, None);
    }
}
