"""Autoscaling: observe queues and the machine, decide (a pure policy), supervise workers."""
