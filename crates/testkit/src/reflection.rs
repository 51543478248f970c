//! A minimal server-reflection client, v1 and v1alpha: what `grpcurl list` does.

use tonic::transport::Channel;

macro_rules! list_services {
    ($name:ident, $pb:path) => {
        /// Lists the services a server announces through this reflection version.
        pub async fn $name(channel: Channel) -> anyhow::Result<Vec<String>> {
            use $pb as pb;
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(pb::server_reflection_request::MessageRequest::ListServices(
                    String::new(),
                )),
            };
            let mut client = pb::server_reflection_client::ServerReflectionClient::new(channel);
            let mut responses = client
                .server_reflection_info(tokio_stream::iter([request]))
                .await?
                .into_inner();
            let response = responses
                .message()
                .await?
                .ok_or_else(|| anyhow::anyhow!("reflection stream ended without an answer"))?;
            match response.message_response {
                Some(pb::server_reflection_response::MessageResponse::ListServicesResponse(
                    list,
                )) => Ok(list.service.into_iter().map(|s| s.name).collect()),
                other => anyhow::bail!("unexpected reflection answer: {other:?}"),
            }
        }
    };
}

list_services!(list_services_v1, tonic_reflection::pb::v1);
list_services!(list_services_v1alpha, tonic_reflection::pb::v1alpha);
