import pytest
import torch
import torch.nn.functional as F

from kd.training.losses import distillation_loss


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 5, generator=g), (torch.rand(8, 5, generator=g) > 0.7).float(), torch.randn(8, 5, generator=g)


def test_alpha_zero_is_plain_bce_and_needs_no_teacher():
    student, labels, teacher = _batch()
    expected = F.binary_cross_entropy_with_logits(student, labels)
    assert torch.allclose(distillation_loss(student, labels, None, alpha=0.0), expected)
    assert torch.allclose(distillation_loss(student, labels, teacher, alpha=0.0, temperature=4.0), expected)


def test_soft_term_is_per_label_sigmoid_bce_scaled_by_t_squared():
    student, labels, teacher = _batch(1)
    for temperature in (1.0, 2.0, 5.0):
        soft = -(torch.sigmoid(teacher / temperature) * F.logsigmoid(student / temperature)
                 + (1 - torch.sigmoid(teacher / temperature)) * F.logsigmoid(-student / temperature)).mean()
        hard = F.binary_cross_entropy_with_logits(student, labels)
        got = distillation_loss(student, labels, teacher, alpha=0.3, temperature=temperature)
        assert torch.allclose(got, 0.7 * hard + 0.3 * temperature**2 * soft, atol=1e-6)


def test_t_squared_keeps_the_soft_gradient_scale():
    """For large T the soft gradient tends to (z_s - z_t) / (4 N); T^2 is what makes it T-independent."""
    student, labels, teacher = _batch(2)
    grads = []
    for temperature in (20.0, 40.0):
        z = student.clone().requires_grad_(True)
        distillation_loss(z, labels, teacher, alpha=1.0, temperature=temperature).backward()
        grads.append(z.grad)
    assert torch.allclose(grads[0], grads[1], rtol=0.02, atol=1e-5)
    assert torch.allclose(grads[1], (student - teacher) / (4 * student.numel()), rtol=0.02, atol=1e-5)


def test_student_equal_to_teacher_gets_zero_kd_gradient():
    student, labels, _ = _batch(3)
    z = student.clone().requires_grad_(True)
    distillation_loss(z, labels, student.clone(), alpha=1.0, temperature=2.0).backward()
    assert torch.allclose(z.grad, torch.zeros_like(z.grad), atol=1e-8)
    z.grad = None
    distillation_loss(z, labels, student + 1.0, alpha=1.0, temperature=2.0).backward()
    assert z.grad.abs().min() > 0


def test_balanced_class_weights_weigh_each_class_alike():
    import numpy as np
    import torch.nn.functional as F

    from kd.training.losses import balanced_weights

    labels = np.eye(3, dtype=np.float32)[[0] * 8 + [1] * 4 + [2] * 2]  # 8 / 4 / 2 rows
    weights = balanced_weights(labels, single_label=True)
    assert weights.tolist() == pytest.approx([14 / 24, 14 / 12, 14 / 6])  # each class 14 / 3 in total
    assert (weights[labels.argmax(axis=1)].mean()).item() == pytest.approx(1.0)  # a row weighs 1 on average
    logits, target = torch.randn(14, 3), torch.from_numpy(labels)
    weighted = distillation_loss(logits, target, alpha=0.0, single_label=True, class_weights=weights)
    rows = F.cross_entropy(logits, target.argmax(dim=1), reduction="none") * weights[target.argmax(dim=1)]
    assert weighted.item() == pytest.approx(rows.mean().item(), rel=1e-6)
    multi = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], np.float32)
    assert balanced_weights(multi, single_label=False).tolist() == [3.0, 3.0]  # negatives / positives
    positive = distillation_loss(torch.zeros(4, 2), torch.from_numpy(multi), alpha=0.0,
                                 class_weights=balanced_weights(multi, single_label=False))
    assert positive.item() == pytest.approx(np.log(2) * (3 * 2 + 6) / 8, rel=1e-6)  # positives count 3 times
