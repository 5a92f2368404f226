//! Receiver reconciler: read the token from the Secret, register the endpoint with the
//! server under a path derived from the token and the Receiver's identity, report the path.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event, finalizer};

use super::context::{Context, FINALIZER};
use super::status::apply_status;
use crate::api::Receiver;
use crate::api::conditions::{self, Status};
use crate::api::reasons::receiver as reasons;
use crate::error::{Error, Result};
use crate::server::{Endpoint, verify};

async fn secret_token(ctx: &Context, ns: &str, receiver: &Receiver) -> Result<Vec<u8>, String> {
    let name = &receiver.spec.secret_ref.name;
    let token = super::secrets::read(&ctx.client, ns, name)
        .await?
        .get("token")
        .map(|t| t.0.clone())
        .ok_or_else(|| format!("Secret {name} has no key `token`"))?;
    if token.len() < 16 {
        return Err(format!(
            "the token in Secret {name} is shorter than 16 bytes; use a random token"
        ));
    }
    Ok(token)
}

async fn apply(receiver: Arc<Receiver>, ctx: Arc<Context>) -> Result<Action> {
    let ns = receiver.namespace().unwrap_or_default();
    let name = receiver.name_any();
    let api: Api<Receiver> = Api::namespaced(ctx.client.clone(), &ns);
    let generation = receiver.metadata.generation;
    let mut status = receiver.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let now = Timestamp::now();
    let requeue = match secret_token(&ctx, &ns, &receiver).await {
        Ok(secret) => {
            let token = verify::path_token(&secret, &ns, &name);
            ctx.endpoints.set(
                token.clone(),
                Endpoint {
                    namespace: ns.clone(),
                    name: name.clone(),
                    kind: receiver.spec.kind,
                    secret,
                    targets: receiver.spec.resources.clone(),
                },
            );
            let path = format!("/hook/{token}");
            let (s, reason, message) = if ctx.receivers_enabled {
                (Status::True, reasons::READY, format!("receiving at {path}"))
            } else {
                (
                    Status::False,
                    reasons::SERVER_DISABLED,
                    "the controller runs without a receiver address (--receiver-addr)".into(),
                )
            };
            status.webhook_path = Some(path);
            conditions::set_condition(
                &mut status.conditions,
                conditions::new_condition(conditions::READY, s, reason, message, generation, now),
            );
            // Secret rotation is noticed within this time.
            Duration::from_secs(60)
        }
        Err(message) => {
            ctx.endpoints.remove(&ns, &name);
            status.webhook_path = None;
            conditions::set_condition(
                &mut status.conditions,
                conditions::new_condition(
                    conditions::READY,
                    Status::False,
                    reasons::SECRET_INVALID,
                    message,
                    generation,
                    now,
                ),
            );
            Duration::from_secs(10)
        }
    };
    if Some(&status) != receiver.status.as_ref() {
        apply_status(&api, &name, &status).await?;
    }
    Ok(Action::requeue(requeue))
}

async fn reconcile(receiver: Arc<Receiver>, ctx: Arc<Context>) -> Result<Action> {
    let ns = receiver.namespace().unwrap_or_default();
    let api: Api<Receiver> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, receiver, |event| async {
        match event {
            Event::Apply(r) => apply(r, ctx.clone()).await,
            Event::Cleanup(r) => {
                ctx.endpoints
                    .remove(&r.namespace().unwrap_or_default(), &r.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

pub async fn run(ctx: Arc<Context>, api: Api<Receiver>) {
    Controller::new(api, ctx.watch())
        .with_config(ctx.controller_config())
        .graceful_shutdown_on(super::shutdown_signal())
        .run(
            |obj, ctx| super::measured(obj, ctx, reconcile),
            super::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}
