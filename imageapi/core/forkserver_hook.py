"""Imported by the worker pool's fork server as a preload module, and by nothing else: the fork
server dies with the process that started it (see `imageapi.core.lifeline`).

`imageapi.core.pool` lists it only when the fork server is started from the main thread, since
the kernel sends the signal when the *thread* that started the process ends."""

from imageapi.core import lifeline

if lifeline.in_forkserver():
    lifeline.die_with_parent()
