"""metaedu: an interactive course on meta-learning.

The package holds everything the lecture notebooks run: data (``metaedu.data``),
task samplers (``metaedu.tasks``), backbones (``metaedu.nn``), one module per
method (``metaedu.algorithms``), the training loop, evaluation with confidence
intervals, plots and widgets (``metaedu.viz``) and the grader (``metaedu.grading``).
"""

__version__ = "0.1.0"
