"""Small reference checkpoints shipped with the package (lecture bar: "Reference checkpoints").

Each ``<name>.pt`` sits beside a ``<name>.json`` that records the one command that produced it, its
settings, seeds, training time and the scores it reaches on fixed test tasks; a test reloads it and
reproduces those scores. The code that builds and loads each lives with its method
(``metaedu.algorithms.platipus.reference`` for lecture 08).
"""
