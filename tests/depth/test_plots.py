import itertools

from matplotlib.text import Text

from attnlab.core.plots import plt
from attnlab.depth.planner import known_models
from attnlab.depth.plots import frontier_axes


def test_frontier_labels_do_not_overlap():
    models = known_models()
    fig = frontier_axes(models)
    try:
        renderer = fig.canvas.get_renderer()
        ax, bx = fig.axes
        labels = [t for t in bx.texts if t.get_text().isdigit()]
        assert sorted(int(t.get_text()) for t in labels) == list(range(1, len(labels) + 1))
        assert len(labels) == len({(m["depth"], m["width"]) for m in models})  # one per distinct shape
        boxes = [Text.get_window_extent(t, renderer) for t in labels]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b)
        inside = bx.get_window_extent(renderer)
        assert all(inside.contains(b.x0, b.y0) and inside.contains(b.x1, b.y1) for b in boxes)
        key = next(t for t in bx.texts if not t.get_text().isdigit())
        assert "GPT-3 175B" in key.get_text() and not key.get_window_extent(renderer).overlaps(inside)
    finally:
        plt.close(fig)
