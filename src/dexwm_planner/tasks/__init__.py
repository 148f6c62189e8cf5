"""Reach / grasp / place tasks: success tests, episode suites, a scripted demonstrator with grasp synthesis."""
