"""The operator's shell: leader election, Events, metrics, settings, kopf handlers.

Everything here does I/O on behalf of the pure core (hafence.core): it reads the
cluster, runs the core's decisions, and writes status, Events and metrics.
"""
