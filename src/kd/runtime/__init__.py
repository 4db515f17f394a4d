"""How a run executes: its context (kd.runtime.context), its Accelerator and hardware
(kd.runtime.hardware) and what it reports (kd.runtime.report)."""
