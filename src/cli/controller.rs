//! `gantry controller`: run the operator.

use std::process::ExitCode;

use std::sync::Arc;

use crate::controller::context::Context;
use crate::controller::{self, Options};
use crate::error::Result;
use crate::server::dispatch;

/// Object writes in flight toward one API server per reconcile slot (`--concurrent`).
const WRITES_PER_SLOT: usize = 4;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "GANTRY_NAMESPACE")]
    pub namespace: Option<String>,

    /// Directory for Git caches and artifacts (an emptyDir in the chart).
    #[arg(long, env = "GANTRY_DATA_DIR", default_value = "/tmp/gantry")]
    pub data_dir: std::path::PathBuf,

    /// Objects applied concurrently within one sync.
    #[arg(long, env = "GANTRY_APPLY_CONCURRENCY", default_value_t = 32)]
    pub apply_concurrency: usize,

    /// Resources of each kind reconciled at once. Also bounds the object writes (dry-runs and
    /// applies) in flight toward each API server to 4 per slot (256 by default), for syncs
    /// in their slots or outside them. A sync keeps its slot while it sends requests, and
    /// lets go once it waits on the cluster (hooks, waves, health) after 3 s, or after 20 s
    /// whatever it does.
    #[arg(long, env = "GANTRY_CONCURRENT", default_value_t = 64)]
    pub concurrent: u16,

    /// The longest Application `spec.timeout` honoured (the CRD allows at most 1h); a
    /// longer one is cut to it. Hook, wave and health waits never hold a reconcile slot.
    #[arg(long, env = "GANTRY_MAX_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub max_timeout: std::time::Duration,

    /// Git fetches running at once, in all (each on a thread of its own).
    #[arg(long, env = "GANTRY_MAX_FETCHES", default_value_t = 64)]
    pub max_fetches: usize,

    /// Git fetches of one namespace running at once: a tenant whose servers never answer
    /// holds at most this many fetch threads, and every other namespace keeps fetching
    /// (16: a quarter of `--max-fetches`; a namespace of many sources fetches 16 at a time).
    /// Never more than half of `--concurrent`: a fetch waiting on a silent server holds its
    /// GitRepository reconcile slot until its timeout.
    #[arg(long, env = "GANTRY_MAX_FETCHES_PER_NAMESPACE", default_value_t = 16)]
    pub max_fetches_per_namespace: usize,

    /// Requests per second toward each API server, on average (0: no limit).
    #[arg(long, env = "GANTRY_KUBE_API_QPS", default_value_t = 500)]
    pub kube_api_qps: u32,

    /// Requests allowed at once above --kube-api-qps.
    #[arg(long, env = "GANTRY_KUBE_API_BURST", default_value_t = 1000)]
    pub kube_api_burst: u32,

    /// Reconcile only resources labelled gantry.dev/shard=NAME (without it: only the
    /// resources without that label).
    #[arg(long, env = "GANTRY_SHARD")]
    pub shard: Option<String>,

    /// Hold a Lease before reconciling, so that of several replicas only one writes.
    #[arg(long, env = "GANTRY_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the Lease (a shard's is `<NAME>-<shard>`).
    #[arg(
        long,
        env = "GANTRY_LEADER_ELECTION_ID",
        default_value = "gantry-controller"
    )]
    pub leader_election_id: String,

    /// Namespace of the Lease (default: POD_NAMESPACE, the in-cluster namespace, the
    /// watched namespace, else `default`).
    #[arg(long, env = "GANTRY_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// This replica's identity in the Lease (default: POD_NAME, else host name and pid).
    #[arg(long, env = "GANTRY_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,

    /// How long a Lease whose holder stopped renewing stays held; a standby takes over
    /// within it.
    #[arg(long, env = "GANTRY_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub leader_election_lease_duration: std::time::Duration,

    /// Address of the webhook receiver server (`/hook/<token>`); `off` to run without it.
    #[arg(long, env = "GANTRY_RECEIVER_ADDR", default_value = "0.0.0.0:9292")]
    pub receiver_addr: String,

    /// Address of `/healthz`, `/readyz` and `/metrics` (a listener of their own, so
    /// webhook traffic never starves a probe); `off` to run without it.
    #[arg(long, env = "GANTRY_METRICS_ADDR", default_value = "0.0.0.0:9293")]
    pub metrics_addr: String,

    /// Address of the web view (`off`: none). Each request must carry a bearer token (the
    /// sign-in form's cookie, or an `Authorization` header from an authenticating proxy);
    /// pages are read and actions made with that token, never with the controller's rights.
    #[arg(long, env = "GANTRY_UI_ADDR", default_value = "off")]
    pub ui_addr: String,

    /// The shortest time between two periodic runs of any resource, whatever its
    /// `interval` says (which the CRDs keep at 1s or more). Webhooks and `gantry sync`
    /// are not delayed by it.
    #[arg(long, env = "GANTRY_MIN_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub min_interval: std::time::Duration,

    /// ServiceAccount (in the Application's namespace) that Applications naming none act
    /// as, by impersonation. Without it, such Applications act as the controller.
    #[arg(long, env = "GANTRY_DEFAULT_SERVICE_ACCOUNT")]
    pub default_service_account: Option<String>,

    /// Refuse Applications that would act as the controller: each must name a
    /// ServiceAccount (or get --default-service-account).
    #[arg(long, env = "GANTRY_REQUIRE_SERVICE_ACCOUNT")]
    pub require_service_account: bool,

    /// Directory under which `file://` GitRepository URLs are allowed (never inside
    /// --data-dir); without it, `file://` sources are refused.
    #[arg(long, env = "GANTRY_FILE_SOURCES_ROOT")]
    pub file_sources_root: Option<std::path::PathBuf>,

    /// Pull request plans computed at once (GitRepositories with `spec.plan.enabled`); each
    /// is bounded by --max-timeout, and 0 turns plans off.
    #[arg(long, env = "GANTRY_MAX_PLANS", default_value_t = 2)]
    pub max_plans: usize,

    /// Let Notifiers send to the cluster's Service network (--service-cidr) and in-cluster
    /// names (`*.svc`, `*.cluster.local`); refused by default, as a tenant could otherwise
    /// reach Services it has no rights to. Link-local and cloud metadata addresses are
    /// refused always.
    #[arg(long, env = "GANTRY_ALLOW_PRIVATE_NOTIFY_TARGETS")]
    pub allow_private_notify_targets: bool,

    /// The cluster's Service network(s), refused as notification targets.
    #[arg(
        long,
        env = "GANTRY_SERVICE_CIDR",
        value_delimiter = ',',
        default_value = "10.96.0.0/12"
    )]
    pub service_cidr: Vec<ipnet::IpNet>,
}

fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    crate::api::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

pub async fn run(args: Args) -> Result<ExitCode> {
    let addr = |flag: &str, value: &str| match value {
        "off" | "" => Ok(None),
        a => a
            .parse()
            .map(Some)
            .map_err(|e| crate::error::Error::Usage(format!("{flag} {a:?}: {e}"))),
    };
    let receiver_addr = addr("--receiver-addr", &args.receiver_addr)?;
    let metrics_addr = addr("--metrics-addr", &args.metrics_addr)?;
    let ui_addr = addr("--ui-addr", &args.ui_addr)?;
    let shard = crate::controller::shard::Shard::new(args.shard)
        .map_err(|e| crate::error::Error::Usage(e.to_string()))?;
    let election = args
        .leader_elect
        .then(|| crate::controller::leader::Election {
            namespace: args.leader_election_namespace.clone().unwrap_or_else(|| {
                crate::controller::leader::default_namespace(args.namespace.as_deref())
            }),
            name: crate::controller::leader::lease_name(&args.leader_election_id, shard.name()),
            identity: args
                .leader_election_identity
                .clone()
                .unwrap_or_else(crate::controller::leader::default_identity),
            duration: args.leader_election_lease_duration,
        });
    let config = kube::Config::infer().await?;
    start(
        config,
        Options {
            namespace: args.namespace,
            data_dir: args.data_dir,
            limits: crate::cluster::ClientLimits {
                concurrency: args.apply_concurrency,
                qps: args.kube_api_qps,
                burst: args.kube_api_burst,
                writes_in_flight: usize::from(args.concurrent) * WRITES_PER_SLOT,
            },
            reconcile_concurrency: args.concurrent,
            max_timeout: args.max_timeout,
            fetches: crate::source::fetch_gate::FetchGate::new(
                args.max_fetches,
                crate::source::fetch_gate::FetchGate::per_namespace_bound(
                    args.max_fetches_per_namespace,
                    args.concurrent,
                ),
            ),
            shard,
            election,
            receiver_addr,
            metrics_addr,
            ui_addr,
            min_interval: args.min_interval,
            tenancy: crate::cluster::Tenancy {
                default_service_account: args.default_service_account,
                require_service_account: args.require_service_account,
            },
            file_sources_root: args.file_sources_root,
            notify_targets: crate::notify::send::Targets {
                allow_private: args.allow_private_notify_targets,
                service_networks: args.service_cidr,
            },
            max_plans: args.max_plans,
        },
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// The composition root: checks the CRDs, serves health, metrics and webhooks (the server
/// queues webhook triggers for the dispatcher), and (once it holds the Lease, with leader
/// election) runs every reconciler until SIGTERM or Ctrl-C.
async fn start(config: kube::Config, opts: Options) -> Result<()> {
    use crate::controller::shutdown_signal;
    // One client for everything the controller does as itself (built by the targets).
    let ui_config = config.clone();
    let (mut ctx, drift_events) = Context::new(config, &opts)?;
    let client = ctx.client.clone();
    crate::controller::crd_check::ensure_installed(&client).await?;
    ctx.receivers_enabled = opts.receiver_addr.is_some();
    ctx.min_interval = opts.min_interval;
    let ctx = Arc::new(ctx);
    let (queue_tx, queue_rx) = tokio::sync::mpsc::channel(dispatch::QUEUE);
    let server = {
        let endpoints = ctx.endpoints.clone();
        let metrics = ctx.metrics.clone();
        let (hooks, ops) = (opts.receiver_addr, opts.metrics_addr);
        tokio::spawn(async move {
            if let Err(e) =
                crate::server::serve(hooks, ops, endpoints, queue_tx, metrics, shutdown_signal())
                    .await
            {
                tracing::error!(error = %e, "HTTP server failed");
            }
        })
    };
    if let Some(addr) = opts.ui_addr {
        serve_ui(addr, ui_config, &client, &opts, &ctx).await?;
    }
    // Webhook triggers are queued only while this replica leads (a standby answers 503),
    // and the dispatcher ends when the server (the queue's sender) is gone.
    let dispatcher = tokio::spawn(dispatch::run(client, queue_rx));
    tracing::info!(
        namespace = opts.namespace.as_deref().unwrap_or("<all>"),
        shard = %opts.shard,
        "controller started"
    );
    let result = controller::lead(&ctx, &opts, drift_events).await;
    if result.is_err() {
        // A lost Lease: stop serving at once, the process exits (and is restarted as a
        // standby).
        server.abort();
    } else {
        let _ = server.await;
    }
    dispatcher.abort();
    tracing::info!("controller stopped");
    result
}

/// Serves the web view on `addr` (every replica, leading or not: it reads and acts with
/// each viewer's token). The controller's own watch of Application metadata only suggests
/// which namespaces to ask the API server about for a viewer.
async fn serve_ui(
    addr: std::net::SocketAddr,
    config: kube::Config,
    client: &kube::Client,
    opts: &Options,
    ctx: &Arc<Context>,
) -> Result<()> {
    use futures::StreamExt;
    use kube::core::PartialObjectMeta;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::error::Error::io(format!("--ui-addr {addr}"), e))?;
    let api: kube::Api<PartialObjectMeta<crate::api::Application>> = match &opts.namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    let namespaces = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| async {});
    tokio::spawn(namespaces);
    let sessions = Arc::new(crate::ui::sessions::Sessions::new(config, store));
    // Idle viewers are dropped once a minute (their watches stop).
    let sweeping = Arc::downgrade(&sessions);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            match sweeping.upgrade() {
                Some(s) => s.sweep(),
                None => return,
            }
        }
    });
    let metrics = crate::ui::metrics::UiMetrics::register(ctx.metrics.registry());
    let access = crate::ui::server::Access::Tokens(sessions);
    tracing::info!(%addr, "web view listening");
    tokio::spawn(async move {
        let stop = crate::controller::shutdown_signal();
        if let Err(e) = crate::ui::server::serve(access, metrics, listener, stop).await {
            tracing::error!(error = %e, "web view failed");
        }
    });
    Ok(())
}
