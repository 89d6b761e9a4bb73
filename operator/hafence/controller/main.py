"""`hafence operator`: the engine.  Watches, elects a leader, fences, places VMs.

Everything runs in one asyncio loop: kopf's watch streams feed the Reconciler; the
leader elector, the metrics/health server and the monitor loop run beside them.
SIGTERM/SIGINT stop the watches and release leadership, so a standby replica takes
over at once instead of after the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import kopf
from kubernetes import config as kube_config

from hafence.controller import clock, logs, pools
from hafence.controller.backoff import ApiBackoffs
from hafence.controller.events import EventRecorder
from hafence.controller.handlers import register
from hafence.controller.leader import LeaderElector
from hafence.controller.lease_watch import LeaseWatch
from hafence.controller.metrics import Metrics, MetricsServer
from hafence.controller.pmhealth import PMHealth
from hafence.controller.reconciler import Reconciler
from hafence.controller.settings import Settings, SettingsError, parse_settings
from hafence.fencing.kdump import KdumpListener
from hafence.kube import Api, load_api

log = logging.getLogger("hafence.operator")


def _kopf_login(api: Api) -> kopf.ConnectionInfo:
    """kopf connects with the very credentials our client loaded (kubeconfig or
    in-cluster): one source of truth, and kopf's own lookup ignores --kubeconfig."""
    cfg = api.client.configuration
    scheme, value = api.credentials()
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        scheme=scheme or None,
        token=value or None,
    )


# A TLS handshake that hangs (a stalled path) is given up after this long and tried
# again on the schedule above; kopf's default waits the whole request timeout (30 s).
CONNECT_TIMEOUT = 5.0


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """The operator's kopf settings (applied at kopf's start-up)."""
    settings.posting.enabled = False  # our Events are ours; kopf's would be noise
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = CONNECT_TIMEOUT
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = CONNECT_TIMEOUT
    settings.networking.error_backoffs = ApiBackoffs()


def main(argv: list[str]) -> int:
    try:
        settings = parse_settings(argv, os.environ)
        settings.policy()  # validate before anything starts
    except SettingsError as exc:
        print(f"hafence operator: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        pass
    return 0


async def run(settings: Settings) -> None:
    if settings.kubeconfig:
        kube_config.load_kube_config(config_file=settings.kubeconfig)
    else:
        try:
            kube_config.load_incluster_config()
        except kube_config.ConfigException:
            kube_config.load_kube_config()
    api = load_api(settings.kubeconfig)
    metrics = Metrics()
    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port)
    elector = LeaderElector(
        api,
        namespace=settings.lease_namespace,
        name=settings.lease_name,
        identity=settings.identity,
        lease_duration=settings.lease_duration,
        renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period,
    )
    metrics.track_leader(lambda: elector.is_leader, lambda: elector.observed_epoch)
    recorder = EventRecorder(api, instance=elector.identity)
    kdump = None
    if settings.kdump_listen is not None:
        # Before anything leads: a port that cannot be bound is a start-up error.
        bind, port = settings.kdump_listen
        kdump = await KdumpListener(bind, port, clock=clock.now).start()
        log.info("fence_kdump listener on udp %s:%d", bind, kdump.port)
    reconciler = Reconciler(
        api, settings.policy(), settings.namespaces, elector, recorder, metrics, kdump
    )
    reconciler.outages.history = settings.outage_history
    reconciler.outages.max_age = settings.outage_max_age

    pm_health = PMHealth(
        api,
        reconciler.cache,
        elector,
        metrics,
        reconciler.engines,
        settings.pm_health_interval,
    )

    registry = kopf.OperatorRegistry()
    register(registry, reconciler)
    kopf.on.login(registry=registry)(lambda **_: _kopf_login(api))

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: object) -> None:
        configure_kopf(settings)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    pools.install(loop)  # blocking work runs on bounded pools of its own kind
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()

    await server.start()
    await elector.start()
    tasks = [
        asyncio.create_task(
            kopf.operator(
                registry=registry,
                standalone=True,
                clusterwide=not settings.namespaces,
                namespaces=list(settings.namespaces),
                stop_flag=stop,
                ready_flag=ready,
            ),
            name="kopf",
        ),
        asyncio.create_task(reconciler.run(), name="reconciler"),
    ]
    for namespace in settings.namespaces or (None,):
        watch = LeaseWatch(api, namespace, reconciler.observe_leases)
        tasks.append(asyncio.create_task(watch.run(), name=f"lease-watch {watch.where}"))
    if settings.pm_health_interval > 0:
        tasks.append(asyncio.create_task(pm_health.run(), name="pm-health"))
    else:
        log.info("power-management health checks are off (--pm-health-interval 0)")
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait([waiter, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
    # kopf installs its own SIGINT/SIGTERM handlers when it starts; ours must win, so
    # that shutting down stands the reconciler down *before* the watches stop.  A
    # reconciler ticking on a view that no longer updates sees every lease expire.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server.set_ready(ready.is_set())
    log.info(
        "operator %s started (profile %s, namespaces %s)",
        elector.identity,
        settings.profile,
        ", ".join(settings.namespaces) or "all",
    )
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not stopper and task.exception() is not None:
            log.error("%s ended: %r", task.get_name(), task.exception())
    log.info("stopping: standing down first, then the watches")
    for task in tasks[1:]:
        task.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await elector.stop(release=True)
    await recorder.aclose()
    await server.stop()
    if kdump is not None:
        kdump.close()
    api.close()
