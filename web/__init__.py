"""The web tools' shared parts: the domain and address policy that fetch, search and the egress proxy apply."""
