#!/usr/bin/env bash
# Runs INSIDE the VM (tests/lib/netfleet_vm.py boots it with the host filesystem
# shared read-only): make the booted kernel's modules loadable (they were
# unpacked into the repository's .lab/vm-kernel, which the guest sees), check
# the kernel has IPIP, then run the given command (a script generated on the
# host, or bench/dataplane.py --guest). Python is slow here (software emulation:
# ~7x on a tight loop, 20-30x on startup and imports).
set -euo pipefail
cd "$(dirname "$0")/../.."
KROOT="$PWD/.lab/vm-kernel/linux-image-$(uname -r)"
[ -d "$KROOT/lib/modules/$(uname -r)" ] || { echo "guest: no modules for $(uname -r) in $KROOT" >&2; exit 90; }
cat > /tmp/netfleet-modprobe <<EOS
#!/bin/sh
exec /sbin/modprobe -d "$KROOT" "\$@"
EOS
chmod +x /tmp/netfleet-modprobe
echo /tmp/netfleet-modprobe > /proc/sys/kernel/modprobe   # the kernel's own module requests go there too
for m in ipip veth bridge nf_tables; do
  /tmp/netfleet-modprobe "$m" || { echo "guest: modprobe $m failed" >&2; exit 91; }
done
echo "guest: kernel $(uname -r), $(nproc) cpu(s), ipip loaded"
ip link set lo up
mkdir -p /run/netns
exec "$@"
