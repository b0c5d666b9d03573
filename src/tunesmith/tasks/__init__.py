"""The task home: everything known about a task with checkable answers, in one place.

Synth makes a task's rows from it (``synth task``), eval scores answers with it (``eval tasks``)
and train rewards completions with it (``objective: grpo``):

    arith.py      multiply and add as a whole: split rule, pairs, rows, question parsing, row check
    multiply.py   generator (question, steps), step checker (check) and reward of a × b
    add.py        the same for a + b
    steps.py      the written line templates both share, and their graded reward
    answers.py    reading an answer: final number, normal form, named values, think block
    rewards.py    the named rewards a recipe picks: multiply, add, label, format, identity, length, prefix

It imports no stage that uses it (synth, eval, train, jobs): a task is known once, below them.
Import the module you need (``from tunesmith.tasks.arith import TASKS``); this file imports nothing.
"""
