//! The `token-service` Lambda function: the token service's router, the one `sealbox up` serves,
//! behind a function URL or API Gateway, signing with keys in KMS for the subscriptions in
//! DynamoDB. `main` only reads the settings, builds the adapters and wires them.
//!
//! Rate limits count per instance (each Lambda instance keeps its own counters), keyed by the
//! caller's address from the request context, since there is no socket peer on Lambda. The
//! real bound is the gateway's throttling (or the function's reserved concurrency).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use lambda_http::request::RequestContext;
use sealbox_authz::caller_identity::StsForwarder;
use sealbox_authz::token_service::{ClientAddr, TokenService, TokenServiceConfig};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::seller::SellerClients;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    sealbox_aws::lambda::init_logging();
    let router = build().await?;
    lambda_http::run(router).await
}

async fn build() -> anyhow::Result<axum::Router> {
    let settings = Settings::from_env(&Var::SELLER)?;
    let seller = SellerClients::from_env().await.seller(&settings);
    let config = TokenServiceConfig::new(settings.get(Var::Product));
    let service = TokenService::new(
        config,
        Arc::new(seller.keys),
        Arc::new(seller.subscriptions),
    )?
    // Buyers prove their account with a signed GetCallerIdentity, sent to STS (or the
    // endpoint AWS_ENDPOINT_URL_STS names).
    .accepting_aws_identity(StsForwarder::from_env());
    Ok(Arc::new(service)
        .router()
        .layer(axum::middleware::from_fn(client_addr)))
}

/// Names the caller by the address in the request context, for the per-address limits.
async fn client_addr(mut request: Request, next: Next) -> Response {
    if let Some(ip) = source_ip(request.extensions().get::<RequestContext>()) {
        request.extensions_mut().insert(ClientAddr(ip));
    }
    next.run(request).await
}

/// The caller's address: `requestContext.http.sourceIp` (function URLs, HTTP APIs) or
/// `requestContext.identity.sourceIp` (REST APIs).
fn source_ip(context: Option<&RequestContext>) -> Option<IpAddr> {
    let ip = match context? {
        RequestContext::ApiGatewayV2(c) => c.http.source_ip.as_deref(),
        RequestContext::ApiGatewayV1(c) => c.identity.source_ip.as_deref(),
        // Other event kinds are not compiled in; without an address, limits are per buyer.
        _ => None,
    };
    ip?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caller_is_named_by_the_source_ip_of_either_api_kind() {
        let mut v2 =
            lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext::default();
        v2.http.source_ip = Some("203.0.113.7".into());
        assert_eq!(
            source_ip(Some(&RequestContext::ApiGatewayV2(v2))),
            "203.0.113.7".parse().ok()
        );
        let mut v1 =
            lambda_http::aws_lambda_events::apigw::ApiGatewayProxyRequestContext::default();
        v1.identity.source_ip = Some("2001:db8::1".into());
        assert_eq!(
            source_ip(Some(&RequestContext::ApiGatewayV1(v1))),
            "2001:db8::1".parse().ok()
        );
        let mut bad =
            lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext::default();
        bad.http.source_ip = Some("not an address".into());
        assert_eq!(source_ip(Some(&RequestContext::ApiGatewayV2(bad))), None);
        assert_eq!(source_ip(None), None);
    }
}
