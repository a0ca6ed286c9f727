"""The server runtime: logging, and what Daphne/Twisted/autobahn do for this project."""
