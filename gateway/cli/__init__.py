"""The command line, in one room: `rerank-gateway` and `python -m gateway`.

main.py parses the commands and hands each to its module: server.py runs the process
(`serve`: workers, signals, reloads), keys.py, usage.py, ledger.py and depth.py the
offline commands; startup.py holds the checks and summary printed before serving."""
