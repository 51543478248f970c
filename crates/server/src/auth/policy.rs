//! Who may call which RPC: the one table. `docs/security.md` shows it; a test checks that every
//! method of the contract has a row.

use super::Role;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated caller (public reads).
    Authenticated,
    /// Any authenticated caller, but a `user` only on their own objects: the handler checks
    /// the request's user id with `Caller::act_as`.
    Owner,
    /// `service` and `admin` only.
    Privileged,
    /// `admin` only.
    Admin,
}

impl Access {
    /// The function-level check; `Owner` passes here and is checked per object.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Access::Authenticated | Access::Owner => true,
            Access::Privileged => matches!(role, Role::Service | Role::Admin),
            Access::Admin => role == Role::Admin,
        }
    }

    /// The roles admitted, for messages and the docs.
    pub fn roles(self) -> &'static str {
        match self {
            Access::Authenticated => "any caller",
            Access::Owner => "the user themselves, a service or an admin",
            Access::Privileged => "a service or an admin",
            Access::Admin => "an admin",
        }
    }
}

/// Which rate-limit bucket a method draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
    Operator,
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The gRPC path, `/package.Service/Method`.
    pub method: &'static str,
    pub access: Access,
    pub class: Class,
}

const fn rule(method: &'static str, access: Access, class: Class) -> Rule {
    Rule {
        method,
        access,
        class,
    }
}

use Access::*;
use Class::*;

/// Every method of the contract. Health (`grpc.health.v1`) and reflection are open: they say
/// nothing about any user.
pub const RULES: &[Rule] = &[
    rule("/shardfeed.v1.UserService/CreateUser", Privileged, Write),
    rule("/shardfeed.v1.UserService/GetUser", Authenticated, Read),
    rule("/shardfeed.v1.UserService/UpdateUser", Owner, Write),
    rule("/shardfeed.v1.UserService/DeleteUser", Owner, Write),
    rule("/shardfeed.v1.GraphService/Follow", Owner, Write),
    rule("/shardfeed.v1.GraphService/Unfollow", Owner, Write),
    rule(
        "/shardfeed.v1.GraphService/ListFollowing",
        Authenticated,
        Read,
    ),
    rule(
        "/shardfeed.v1.GraphService/ListFollowers",
        Authenticated,
        Read,
    ),
    rule("/shardfeed.v1.PostService/CreatePost", Owner, Write),
    rule("/shardfeed.v1.PostService/GetPost", Authenticated, Read),
    rule("/shardfeed.v1.PostService/DeletePost", Owner, Write),
    rule("/shardfeed.v1.FeedService/GetHomeFeed", Owner, Read),
    rule(
        "/shardfeed.v1.FeedService/GetUserTimeline",
        Authenticated,
        Read,
    ),
    rule(
        "/shardfeed.v1.HotspotService/GetHotAuthors",
        Admin,
        Operator,
    ),
];

/// Paths served without credentials.
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// The rule of `path`; `None` for a path that is no method of the contract.
pub fn rule_of(path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.method == path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method in the contract's descriptors has exactly one rule, and every rule names
    /// a method that exists: a new RPC cannot ship unguarded.
    #[test]
    fn every_method_of_the_contract_has_one_rule() {
        let set = prost_types::FileDescriptorSet::decode(shardfeed_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut methods = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        assert!(methods.len() >= 14, "{methods:?}");
        for method in &methods {
            let rows = RULES.iter().filter(|r| r.method == method).count();
            assert_eq!(rows, 1, "{method} has {rows} rules");
        }
        for r in RULES {
            assert!(
                methods.iter().any(|m| m == r.method),
                "{} is no method",
                r.method
            );
        }
    }

    #[test]
    fn operator_rpcs_are_admin_only_and_health_is_open() {
        let hot = rule_of("/shardfeed.v1.HotspotService/GetHotAuthors").unwrap();
        assert!(hot.access.admits(Role::Admin));
        assert!(!hot.access.admits(Role::Service) && !hot.access.admits(Role::User));
        let create = rule_of("/shardfeed.v1.UserService/CreateUser").unwrap();
        assert!(!create.access.admits(Role::User) && create.access.admits(Role::Service));
        assert!(is_open("/grpc.health.v1.Health/Check"));
        assert!(is_open(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_open("/shardfeed.v1.UserService/GetUser"));
        assert!(rule_of("/shardfeed.v1.UserService/Nope").is_none());
    }
}
