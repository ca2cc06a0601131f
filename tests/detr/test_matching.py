import torch

from attnlab.detr.matching import hungarian_match, matching_quality, one_to_many_assign, pad_targets


def _per_object(b, q, g):
    out = {}
    for bb, qq, gg in zip(b.tolist(), q.tolist(), g.tolist(), strict=True):
        out.setdefault((bb, gg), []).append(qq)
    return out


def test_assigner_threshold_topk_and_forced_best():
    # 2 objects x 10 queries
    quality = torch.full((2, 10), 0.1)
    quality[0, :8] = torch.tensor([0.9, 0.8, 0.75, 0.7, 0.6, 0.5, 0.45, 0.41])   # 8 above 0.4 -> top 6 kept
    quality[1, 8] = 0.3                                                          # best is below threshold: forced
    quality[1, 9] = 0.2
    b, q, g = one_to_many_assign(quality, threshold=0.4, topk=6)
    per = _per_object(b, q, g)
    assert sorted(per[(0, 0)]) == [0, 1, 2, 3, 4, 5]
    assert per[(0, 1)] == [8]
    assert len(set(q.tolist())) == len(q)          # a query serves one object


def test_assigner_every_object_gets_one_to_six_and_threshold_is_honoured():
    torch.manual_seed(0)
    for _ in range(20):
        quality = torch.rand(3, 4, 30) * 0.8
        b, q, g = one_to_many_assign(quality, threshold=0.4, topk=6)
        per = _per_object(b, q, g)
        for (bb, gg), qs in per.items():
            assert 1 <= len(qs) <= 6
            best = int(quality[bb, gg].argmax())
            # everything kept is above the threshold, except the object's own forced best query
            assert all(quality[bb, gg, qq] >= 0.4 or qq == best for qq in qs)
            # each kept query prefers this object
            assert all(int(quality[bb, :, qq].argmax()) == gg for qq in qs)
        pairs = list(zip(b.tolist(), q.tolist(), strict=True))
        assert len(set(pairs)) == len(pairs)


def test_assigner_threshold_excludes_low_quality_queries():
    quality = torch.tensor([[0.39, 0.2, 0.5, 0.399]])
    b, q, g = one_to_many_assign(quality, threshold=0.4, topk=6)
    assert q.tolist() == [2]


def test_assigner_empty_image_gives_no_positives():
    b, q, g = one_to_many_assign(torch.zeros(0, 10))
    assert len(b) == len(q) == len(g) == 0
    # a padded image inside a batch (its objects marked -1) gets none either
    quality = torch.full((2, 1, 5), -1.0)
    quality[0, 0, 2] = 0.9
    b, q, g = one_to_many_assign(quality)
    assert b.tolist() == [0] and q.tolist() == [2]


def test_matching_quality_formula():
    logits = torch.full((1, 2, 3), -20.0)
    logits[0, 0, 1] = 0.0                        # query 0: p = 0.5 for class 1
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]])
    labels, gt, valid = pad_targets([{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}])
    qm = matching_quality(logits, boxes, labels, gt, valid)
    assert qm.shape == (1, 1, 2)
    assert abs(qm[0, 0, 0].item() - (0.3 * 0.5 + 0.7 * 1.0)) < 1e-6
    assert qm[0, 0, 1].item() < 0.01


def test_hungarian_finds_the_matching_queries():
    gt = torch.tensor([[0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.3]])
    boxes = torch.tensor([[[0.5, 0.5, 0.3, 0.3], [0.7, 0.7, 0.2, 0.3], [0.9, 0.1, 0.1, 0.1], [0.2, 0.2, 0.1, 0.1]]])
    logits = torch.full((1, 4, 2), -5.0)
    logits[0, 1, 1] = logits[0, 3, 0] = 5.0
    labels, gtb, valid = pad_targets([{"labels": torch.tensor([0, 1]), "boxes": gt}])
    b, q, g = hungarian_match(logits, boxes, labels, gtb, valid)
    assert dict(zip(g.tolist(), q.tolist(), strict=True)) == {0: 3, 1: 1}
