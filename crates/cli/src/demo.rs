//! `shardfeed demo`: walks through the API of a running stack as a client would, printing each
//! call, what came back, and the documented error for each kind of bad input.

use std::time::Duration;

use anyhow::{bail, Context};
use shardfeed_proto::v1::{
    feed_service_client::FeedServiceClient, graph_service_client::GraphServiceClient,
    post_service_client::PostServiceClient, user_service_client::UserServiceClient,
    CreatePostRequest, CreateUserRequest, DeletePostRequest, DeleteUserRequest, FollowRequest,
    GetHomeFeedRequest, GetPostRequest, GetUserRequest, ListFollowingRequest, UpdateUserRequest,
    User,
};
use shardfeed_testkit::ServingStatus;
use tonic::Code;
use tonic_types::StatusExt;

use crate::client::{AggregatorFlag, Channels, IngestFlag, TlsFlags};

#[derive(clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    ingest: IngestFlag,
    #[command(flatten)]
    aggregator: AggregatorFlag,
    #[command(flatten)]
    tls: TlsFlags,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let bearer = crate::client::bearer(&crate::dev::cli_settings()?)?;
    let ingest =
        Channels::connect(&args.ingest.url, &args.tls, 1, "ingest service", &bearer).await?;
    let aggregator =
        Channels::connect(&args.aggregator.url, &args.tls, 1, "aggregator", &bearer).await?;

    step("Both services report their health (grpc.health.v1)");
    for (name, channels) in [("ingest", &ingest), ("aggregator", &aggregator)] {
        shardfeed_testkit::wait_for_health(
            &channels.raw(0),
            "",
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await
        .with_context(|| format!("{name} is not SERVING"))?;
        println!("  {name:<10} {:?}", ServingStatus::Serving);
    }

    let (ingest, aggregator) = (ingest.get(0), aggregator.get(0));
    let mut users = UserServiceClient::new(ingest.clone());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];

    step("Create three users (UserService.CreateUser)");
    let mut created = Vec::new();
    for (handle, name) in [
        ("ada", "Ada Lovelace"),
        ("grace", "Grace Hopper"),
        ("edsger", "Edsger Dijkstra"),
    ] {
        let user = users
            .create_user(CreateUserRequest {
                handle: format!("{handle}_{suffix}"),
                display_name: name.into(),
                request_id: String::new(),
            })
            .await?
            .into_inner()
            .user
            .context("CreateUser returned no user")?;
        print_user("created", &user);
        created.push(user);
    }

    step("A retry with the same request_id returns the first result (AIP-155)");
    let request_id = uuid::Uuid::new_v4().to_string();
    let request = CreateUserRequest {
        handle: format!("alan_{suffix}"),
        display_name: "Alan Turing".into(),
        request_id: request_id.clone(),
    };
    let first = users
        .create_user(request.clone())
        .await?
        .into_inner()
        .user
        .context("no user")?;
    let retry = users
        .create_user(request)
        .await?
        .into_inner()
        .user
        .context("no user")?;
    print_user("first", &first);
    print_user("retry", &retry);
    if first != retry {
        bail!("a retried CreateUser returned a different user");
    }
    println!("  same user_id on retry: {}", first.user_id);
    created.push(first);

    step("Read and update (GetUser, UpdateUser)");
    let ada = &created[0];
    let got = users
        .get_user(GetUserRequest {
            user_id: ada.user_id,
        })
        .await?
        .into_inner()
        .user
        .context("no user")?;
    print_user("got", &got);
    let updated = users
        .update_user(UpdateUserRequest {
            user_id: ada.user_id,
            display_name: "Augusta Ada King".into(),
        })
        .await?
        .into_inner()
        .user
        .context("no user")?;
    print_user("updated", &updated);

    step("Bad input gets a clear error and changes nothing");
    let bad_calls: Vec<(&str, Code, CreateUserRequest)> = vec![
        (
            "handle too short",
            Code::InvalidArgument,
            create_req("ab", "X"),
        ),
        (
            "handle with capitals",
            Code::InvalidArgument,
            create_req("Ada_Shouts", "X"),
        ),
        (
            "empty display_name",
            Code::InvalidArgument,
            create_req(&format!("nobody_{suffix}"), ""),
        ),
        (
            "request_id not a UUID",
            Code::InvalidArgument,
            CreateUserRequest {
                request_id: "try-again".into(),
                ..create_req(&format!("nobody_{suffix}"), "Nobody")
            },
        ),
        (
            "handle already taken",
            Code::AlreadyExists,
            create_req(&ada.handle, "Another Ada"),
        ),
    ];
    for (what, expected, request) in bad_calls {
        let status = users
            .create_user(request)
            .await
            .expect_err("bad input must fail");
        report_error(what, expected, &status)?;
    }
    let status = users
        .get_user(GetUserRequest { user_id: i64::MAX })
        .await
        .expect_err("an unknown user must fail");
    report_error("unknown user_id", Code::NotFound, &status)?;

    step("Follow each other and post (GraphService, PostService)");
    let mut graph = GraphServiceClient::new(ingest.clone());
    let mut posts = PostServiceClient::new(ingest.clone());
    let (grace, edsger) = (&created[1], &created[2]);
    for followee in [grace, edsger] {
        graph
            .follow(FollowRequest {
                follower_id: ada.user_id,
                followee_id: followee.user_id,
            })
            .await?;
        println!("  {} follows {}", ada.handle, followee.handle);
    }
    let following = graph
        .list_following(ListFollowingRequest {
            user_id: ada.user_id,
            page_size: 0,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    println!(
        "  ListFollowing({}) -> {:?}",
        ada.handle, following.user_ids
    );
    let mut published = Vec::new();
    for (author, body) in [
        (grace, "Nobody ever got fired for writing a compiler."),
        (edsger, "Simplicity is prerequisite for reliability."),
        (
            grace,
            "It is easier to ask forgiveness than it is to get permission.",
        ),
    ] {
        let post = posts
            .create_post(CreatePostRequest {
                author_id: author.user_id,
                body: body.into(),
                request_id: uuid::Uuid::new_v4().to_string(),
            })
            .await?
            .into_inner()
            .post
            .context("CreatePost returned no post")?;
        println!(
            "  {} posted {} : {:?}",
            author.handle, post.post_id, post.body
        );
        published.push(post);
    }
    let status = posts
        .create_post(CreatePostRequest {
            author_id: grace.user_id,
            body: "   ".into(),
            request_id: String::new(),
        })
        .await
        .expect_err("a blank post must be refused");
    report_error("blank post body", Code::InvalidArgument, &status)?;
    let status = graph
        .follow(FollowRequest {
            follower_id: ada.user_id,
            followee_id: ada.user_id,
        })
        .await
        .expect_err("a self-follow must be refused");
    report_error("self-follow", Code::InvalidArgument, &status)?;
    let gone = &published[0];
    posts
        .delete_post(DeletePostRequest {
            post_id: gone.post_id,
        })
        .await?;
    let status = posts
        .get_post(GetPostRequest {
            post_id: gone.post_id,
        })
        .await
        .expect_err("a deleted post must be gone");
    report_error("deleted post", Code::NotFound, &status)?;
    println!(
        "  the cache holds each author's timeline: redis-cli --user shardfeed -c -p 7000 zrevrange '{{u:{}}}:tl' 0 -1 withscores",
        grace.user_id
    );

    step("Home feed (FeedService on the aggregator): newest first, two posts a page");
    let mut feeds = FeedServiceClient::new(aggregator.clone());
    let mut token = String::new();
    let mut seen = Vec::new();
    loop {
        let page = feeds
            .get_home_feed(GetHomeFeedRequest {
                user_id: ada.user_id,
                page_size: 2,
                page_token: token.clone(),
            })
            .await?
            .into_inner();
        for post in &page.posts {
            println!(
                "  {:>20}  author {}  {:?}",
                post.post_id, post.author_id, post.body
            );
            seen.push(post.post_id);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        println!(
            "  -- next page (token {}…)",
            &page.next_page_token[..12.min(page.next_page_token.len())]
        );
        token = page.next_page_token;
    }
    let mut expected: Vec<i64> = published[1..].iter().map(|p| p.post_id).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    if seen != expected {
        bail!("the home feed {seen:?} is not the live posts newest first {expected:?}");
    }
    println!(
        "  the feed holds every live post of the followees, newest first, the deleted one gone"
    );
    let status = feeds
        .get_home_feed(GetHomeFeedRequest {
            user_id: ada.user_id,
            page_size: 2,
            page_token: "not-a-token".into(),
        })
        .await
        .expect_err("a forged token must be refused");
    report_error("forged page token", Code::InvalidArgument, &status)?;

    step("Delete the demo users (DeleteUser)");
    for user in &created {
        users
            .delete_user(DeleteUserRequest {
                user_id: user.user_id,
            })
            .await?;
        println!("  deleted {} ({})", user.user_id, user.handle);
    }
    let status = users
        .get_user(GetUserRequest {
            user_id: created[0].user_id,
        })
        .await
        .expect_err("a deleted user must be gone");
    report_error("deleted user", Code::NotFound, &status)?;

    println!("\ndemo finished: every call behaved as documented");
    Ok(())
}

fn create_req(handle: &str, display_name: &str) -> CreateUserRequest {
    CreateUserRequest {
        handle: handle.into(),
        display_name: display_name.into(),
        request_id: String::new(),
    }
}
fn step(title: &str) {
    println!("\n== {title}");
}

fn print_user(label: &str, user: &User) {
    println!(
        "  {label:<8} user_id={} handle={} display_name={:?}",
        user.user_id, user.handle, user.display_name
    );
}

fn report_error(what: &str, expected: Code, status: &tonic::Status) -> anyhow::Result<()> {
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .map(|br| {
            br.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default();
    let blamed = if fields.is_empty() {
        String::new()
    } else {
        format!(" [field: {}]", fields.join(", "))
    };
    println!(
        "  {what:<24} -> {:?}: {}{blamed}",
        status.code(),
        status.message()
    );
    if status.code() != expected {
        bail!("{what}: expected {expected:?}, got {:?}", status.code());
    }
    Ok(())
}
