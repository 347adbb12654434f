"""Local clusters for the demo and the tests: a real etcd and namespaced systemd machines."""
