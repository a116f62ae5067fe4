"""The plots of studies and of the quickstart's report: matplotlib figures without pyplot, written as PNG."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def figure(path: str, columns: int = 1, rows: int = 1, size: tuple[float, float] = (5.5, 3.8)):
    """A figure of rows × columns axes (a 2-D array), laid out and written to ``path`` when the block ends. Drawn
    on its own Agg canvas: pyplot's backend and figure list stay as the caller left them."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    drawn = Figure(figsize=size)
    FigureCanvasAgg(drawn)
    yield drawn.subplots(rows, columns, squeeze=False)
    drawn.tight_layout()
    drawn.savefig(path, dpi=100)


def lines_with_spread(path: str, lines: dict[str, list[tuple[float, float, float]]], x_label: str, y_label: str,
                      title: str, log_x: bool = False) -> None:
    """One line per label through its (x, mean, std) points, the std as error bars."""
    with figure(path) as axes:
        axis = axes[0, 0]
        for label, points in lines.items():
            points = sorted(points)
            axis.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                          capsize=3, label=label)
        if log_x:
            axis.set_xscale("log")
        axis.set(xlabel=x_label, ylabel=y_label, title=title)
        axis.legend()


def signed_bars(path: str, bars: list[tuple[str, float]], y_label: str, title: str) -> None:
    """One bar per label, above zero in blue and below in orange."""
    with figure(path, size=(max(4, 0.8 * len(bars) + 2), 3.8)) as axes:
        axis = axes[0, 0]
        axis.bar([label for label, _ in bars], [value for _, value in bars],
                 color=["tab:blue" if value >= 0 else "tab:orange" for _, value in bars])
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set(ylabel=y_label, title=title)
        axis.tick_params(axis="x", rotation=30)
