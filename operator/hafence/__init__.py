"""hafence: high availability for VMs on hypervisor hosts, as a Kubernetes operator."""

__version__ = "0.1.0"
