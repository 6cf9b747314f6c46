"""The virtual-clock driver: hosts on in-memory links, time jumping to the next event."""

from stack.sim.simulator import Delivery, Hook, Simulator

__all__ = ["Delivery", "Hook", "Simulator"]
