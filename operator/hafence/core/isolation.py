"""What a host that hafence cannot fence tells the person who must act.

Every way of ending there (every fence level failed, no power management, fencing
skipped by policy) leads to Isolated (``NEEDS_PERSON_PHASES``), with one message: why,
what to check on site, and the exact command that confirms the host is off.
"""

from __future__ import annotations

from hafence.core.records import HostRecord

# The annotation a person sets on a Host to confirm it is off (controller/confirm.py
# turns it into a FenceConfirmation).
CONFIRM_ANNOTATION = "hafence.io/confirm-rebooted"


def confirm_command(host: str, namespace: str = "") -> str:
    where = f" -n {namespace}" if namespace else ""
    return f'kubectl annotate host {host}{where} {CONFIRM_ANNOTATION}="<how you know it is off>"'


def needs_person(rec: HostRecord, has_power_management: bool, namespace: str = "") -> str:
    if rec.held is not None and rec.held.startswith("FenceSkipped"):
        why = f"fencing skipped by policy: {rec.held_message or rec.held}"
        check = (
            "check on site that the host is off (or pull its power cables), or fix the "
            "network between it and the operator (fencing runs by itself once the policy "
            "allows it)"
        )
    elif has_power_management:
        why = f"every fence level failed (attempt {rec.attempt})"
        check = (
            "check on site that the host is off: its power cables, and its BMC (powered, "
            "cabled, answering on its address); hafence retries the fence agents meanwhile"
        )
    else:
        why = "no power management to fence it with"
        check = (
            "check on site that the host is off (or pull its power cables); give it a "
            "FenceAgent so that hafence can fence it next time"
        )
    return (
        f"{why}; its VMs stay Unknown until it is fenced, confirmed off, or self-fencing "
        f"is proven. {check[0].upper()}{check[1:]}. Then confirm it is off: "
        f"{confirm_command(rec.name, namespace)}"
    )
