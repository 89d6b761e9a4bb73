"""The lab: a datacenter on one machine (control plane, virtual hosts, failures).

``hafence lab`` (hafence.lab.main) and the end-to-end tests use :class:`Lab`
(hafence.lab.runner) and the scenarios of hafence.lab.scenarios.
"""
