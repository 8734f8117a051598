"""The ``orchestrator`` command line (also ``python -m orchestrator``).

Commands: ``migrate``, ``run`` (the worker daemon), ``submit``, ``status``,
``cancel``, ``jobs``, ``wait``, ``demo``, ``bench``, ``token``. See ``orchestrator
--help`` and ``orchestrator COMMAND --help``.

One module per responsibility, imported one way (each only from those
listed after it), none holding mutable state:

- ``_main``: the entry point (``main``): parse, run the command, report an
  error as one line and an exit code.
- ``_parser``: the arguments and the help.
- ``_daemon``: ``run``, the worker daemon (and its ``--http`` server), and
  its signal handling.
- ``_token_commands``: ``token create|list|revoke``, the HTTP API's tokens.
- ``_commands``: the other commands.
- ``_demo``: ``demo``'s scenarios and live table.
- ``_session``: what every command needs: who is acting, the schema, the
  database, a running orchestrator.
- ``_render``: jobs on the terminal, shared by ``status``, ``jobs``,
  ``wait`` and the demo.
- ``_exits``: exit codes, and the message and code for each error.

This package imports none of its modules itself: importing one loads only
what it needs.
"""
