"""The student: where it starts (kd.student.start, with pre-training by distillation in
kd.student.pretrain) and its training stage (kd.student.stage)."""
