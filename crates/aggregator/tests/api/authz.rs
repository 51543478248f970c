//! Authentication and authorization of every RPC of both services, table-driven: each method
//! called with no token, as the user who owns the objects, as another user, as a service and as
//! an admin, each on fresh users and posts. A refused call is refused with the right code and
//! changes nothing in PostgreSQL.

use shardfeed_proto::auth::Bearer;
use shardfeed_proto::v1::{
    feed_service_client::FeedServiceClient, graph_service_client::GraphServiceClient,
    hotspot_service_client::HotspotServiceClient, post_service_client::PostServiceClient,
    user_service_client::UserServiceClient, *,
};
use shardfeed_server::auth::{policy::RULES, Role};
use shardfeed_testkit::InProcessServer;
use tonic::{
    service::{interceptor::InterceptedService, Interceptor},
    transport::Channel,
    Code, Request, Status,
};

use crate::harness::Harness;

/// A bearer token, or none at all.
#[derive(Clone)]
struct MaybeBearer(Option<Bearer>);

impl Interceptor for MaybeBearer {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match &mut self.0 {
            Some(bearer) => bearer.call(request),
            None => Ok(request),
        }
    }
}

type Ch = InterceptedService<Channel, MaybeBearer>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    /// The user whose objects the call is about.
    Owner,
    /// Another user.
    Other,
    Service,
    Admin,
}

const WHO: [Who; 5] = [
    Who::Nobody,
    Who::Owner,
    Who::Other,
    Who::Service,
    Who::Admin,
];

/// The objects of one cell: fresh users and a post of the owner.
struct Fixture {
    owner: i64,
    other: i64,
    followee: i64,
    post: i64,
}

struct World {
    h: Harness,
    ingest: InProcessServer,
}

impl World {
    async fn start() -> World {
        let h = Harness::start(100).await;
        let ingest = h.start_ingest(|_| {}).await;
        World { h, ingest }
    }

    fn bearer(&self, who: Who, fx: &Fixture) -> MaybeBearer {
        let s = &self.h.settings;
        MaybeBearer(match who {
            Who::Nobody => None,
            Who::Owner => Some(shardfeed_testkit::auth::bearer(
                s,
                &fx.owner.to_string(),
                Role::User,
            )),
            Who::Other => Some(shardfeed_testkit::auth::bearer(
                s,
                &fx.other.to_string(),
                Role::User,
            )),
            Who::Service => Some(shardfeed_testkit::auth::bearer(
                s,
                "timeline-svc",
                Role::Service,
            )),
            Who::Admin => Some(shardfeed_testkit::auth::bearer(s, "ops", Role::Admin)),
        })
    }

    fn ingest_as(&self, who: Who, fx: &Fixture) -> Ch {
        InterceptedService::new(self.ingest.channel.clone(), self.bearer(who, fx))
    }

    fn aggregator_as(&self, who: Who, fx: &Fixture) -> Ch {
        InterceptedService::new(self.h.channel.clone(), self.bearer(who, fx))
    }

    async fn fixture(&self) -> Fixture {
        let service =
            shardfeed_testkit::auth::as_service(self.ingest.channel.clone(), &self.h.settings);
        let mut users = UserServiceClient::new(service.clone());
        let mut ids = Vec::new();
        for _ in 0..3 {
            let handle = format!("a_{:08x}", rand::random::<u32>());
            let user = users
                .create_user(CreateUserRequest {
                    handle,
                    display_name: "Authz".into(),
                    request_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap();
            ids.push(user.user_id);
        }
        let post = PostServiceClient::new(service)
            .create_post(CreatePostRequest {
                author_id: ids[0],
                body: "mine".into(),
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .post
            .unwrap();
        Fixture {
            owner: ids[0],
            other: ids[1],
            followee: ids[2],
            post: post.post_id,
        }
    }

    /// Everything a refused call could have changed.
    async fn truth(&self) -> String {
        self.h
            .sql
            .query_one(
                "SELECT (SELECT count(*) FROM users)::text || '/' ||
                        (SELECT coalesce(string_agg(display_name, ',' ORDER BY user_id), '') FROM users) || '/' ||
                        (SELECT count(*) FROM posts WHERE delete_time IS NULL)::text || '/' ||
                        (SELECT count(*) FROM follows)::text",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// Calls `method` as `who` on the objects of `fx`.
    async fn call(&self, method: &str, who: Who, fx: &Fixture) -> Result<(), Status> {
        let i = || self.ingest_as(who, fx);
        let a = || self.aggregator_as(who, fx);
        let name = method.rsplit('/').next().unwrap();
        match name {
            "CreateUser" => UserServiceClient::new(i())
                .create_user(CreateUserRequest {
                    handle: format!("n_{:08x}", rand::random::<u32>()),
                    display_name: "New".into(),
                    request_id: String::new(),
                })
                .await
                .map(drop),
            "GetUser" => UserServiceClient::new(i())
                .get_user(GetUserRequest { user_id: fx.owner })
                .await
                .map(drop),
            "UpdateUser" => UserServiceClient::new(i())
                .update_user(UpdateUserRequest {
                    user_id: fx.owner,
                    display_name: "Renamed".into(),
                })
                .await
                .map(drop),
            "DeleteUser" => UserServiceClient::new(i())
                .delete_user(DeleteUserRequest { user_id: fx.owner })
                .await
                .map(drop),
            "Follow" => GraphServiceClient::new(i())
                .follow(FollowRequest {
                    follower_id: fx.owner,
                    followee_id: fx.followee,
                })
                .await
                .map(drop),
            "Unfollow" => GraphServiceClient::new(i())
                .unfollow(UnfollowRequest {
                    follower_id: fx.owner,
                    followee_id: fx.followee,
                })
                .await
                .map(drop),
            "ListFollowing" => GraphServiceClient::new(i())
                .list_following(ListFollowingRequest {
                    user_id: fx.owner,
                    ..Default::default()
                })
                .await
                .map(drop),
            "ListFollowers" => GraphServiceClient::new(i())
                .list_followers(ListFollowersRequest {
                    user_id: fx.owner,
                    ..Default::default()
                })
                .await
                .map(drop),
            "CreatePost" => PostServiceClient::new(i())
                .create_post(CreatePostRequest {
                    author_id: fx.owner,
                    body: "as the owner".into(),
                    request_id: String::new(),
                })
                .await
                .map(drop),
            "GetPost" => PostServiceClient::new(i())
                .get_post(GetPostRequest { post_id: fx.post })
                .await
                .map(drop),
            "DeletePost" => PostServiceClient::new(i())
                .delete_post(DeletePostRequest { post_id: fx.post })
                .await
                .map(drop),
            "GetHomeFeed" => FeedServiceClient::new(a())
                .get_home_feed(GetHomeFeedRequest {
                    user_id: fx.owner,
                    ..Default::default()
                })
                .await
                .map(drop),
            "GetUserTimeline" => FeedServiceClient::new(a())
                .get_user_timeline(GetUserTimelineRequest {
                    user_id: fx.owner,
                    ..Default::default()
                })
                .await
                .map(drop),
            "GetHotAuthors" => HotspotServiceClient::new(a())
                .get_hot_authors(GetHotAuthorsRequest { limit: 10 })
                .await
                .map(drop),
            other => panic!("no call for {other}: add one to this table"),
        }
    }

    /// What `method` needs beyond the fixture: an edge for `Unfollow` to remove.
    async fn prepare(&self, method: &str, fx: &Fixture) {
        if method.ends_with("/Unfollow") {
            GraphServiceClient::new(shardfeed_testkit::auth::as_service(
                self.ingest.channel.clone(),
                &self.h.settings,
            ))
            .follow(FollowRequest {
                follower_id: fx.owner,
                followee_id: fx.followee,
            })
            .await
            .unwrap();
        }
    }
}

/// What `who` gets from `method`: `None` for success.
fn expected(method: &str, who: Who) -> Option<Code> {
    use Who::*;
    let name = method.rsplit('/').next().unwrap();
    let owner_only = [
        "UpdateUser",
        "DeleteUser",
        "Follow",
        "Unfollow",
        "CreatePost",
        "DeletePost",
        "GetHomeFeed",
    ];
    match (name, who) {
        (_, Nobody) => Some(Code::Unauthenticated),
        ("CreateUser", Owner | Other) => Some(Code::PermissionDenied),
        ("GetHotAuthors", Owner | Other | Service) => Some(Code::PermissionDenied),
        (name, Other) if owner_only.contains(&name) => Some(Code::PermissionDenied),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_admits_exactly_whom_the_policy_says() {
    let w = World::start().await;
    let mut table = Vec::new();
    let mut wrong = Vec::new();
    for rule in RULES {
        let mut row = format!("{:<45}", rule.method);
        for who in WHO {
            let fx = w.fixture().await;
            w.prepare(rule.method, &fx).await;
            let before = w.truth().await;
            let got = w.call(rule.method, who, &fx).await;
            let code = got.as_ref().err().map(|s| s.code());
            row.push_str(&format!(
                " {:>18}",
                code.map_or("OK".to_owned(), |c| format!("{c:?}"))
            ));
            let want = expected(rule.method, who);
            if code != want {
                wrong.push(format!(
                    "{} as {who:?}: got {:?}, want {want:?}",
                    rule.method,
                    got.err()
                ));
            } else if code.is_some() {
                let after = w.truth().await;
                if before != after {
                    wrong.push(format!(
                        "{} as {who:?} was refused but changed {before} → {after}",
                        rule.method
                    ));
                }
            }
        }
        table.push(row);
    }
    println!("{}", table.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The table above covered every method of both services (policy::RULES has one row per
    // method of the contract, a unit test in shardfeed-server checks that).
    assert_eq!(table.len(), RULES.len());
}
