"""Development tooling, never imported by the agent or the loader at run time: the
test VM and kernel builds (vm), the benchmark (bench), the private apt configuration
they share (privateapt). The host-container image leaves this package out."""
