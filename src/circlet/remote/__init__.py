"""The runner interface of the server: what a worker on another machine talks to (gateway.py)
and how it talks to it (client.py). Workers hold no database credentials: they report through
this interface with a worker token, and each build they run gets a token of its own."""
