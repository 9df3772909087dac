"""Interactive figures that also work when a notebook is executed headless.

:func:`interactive_figure` shows the controls and, below them, the figure as an
ordinary image output. Moving a control redraws the figure and replaces that
image in place (``update_display``). Executed by papermill, ``metaedu run`` or the
grader, the image of the default settings is still in the notebook: the static
fallback is the same output, not a second code path.
"""

from __future__ import annotations

from typing import Callable

import matplotlib.pyplot as plt


def interactive_figure(draw: Callable[..., "plt.Figure"], layout: str = "horizontal", **controls):
    """Show ``controls`` (ipywidgets, by keyword) and the figure ``draw(**values)`` that follows them.

    ``draw`` receives each control's current value under its keyword and returns a
    matplotlib figure (it should not train: precompute, then draw). Returns the
    box of controls, so a caller (or a browser test) can move them.
    """
    import ipywidgets as widgets
    from IPython.display import display

    if not controls:
        raise ValueError("interactive_figure needs at least one control")
    box = (widgets.HBox if layout == "horizontal" else widgets.VBox)(list(controls.values()))
    box.add_class("metaedu-controls")
    display(box)

    def current() -> dict:
        return {name: control.value for name, control in controls.items()}

    fig = draw(**current())
    handle = display(fig, display_id=True)
    plt.close(fig)

    def redraw(_change=None) -> None:
        new = draw(**current())
        handle.update(new)
        plt.close(new)

    for control in controls.values():
        control.observe(redraw, names="value")
    box.redraw = redraw  # lets tests trigger a redraw without a frontend
    return box
