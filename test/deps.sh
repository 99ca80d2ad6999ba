#!/usr/bin/env bash
# Installs what lodis's tests and demo need on Debian, or says how.
set -euo pipefail
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v nsenter >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)          # test/security: its network namespace
[ -x /usr/lib/polkit-1/polkitd ] || need+=(polkitd)  # the supervisor runs as user lodis; test/security attacks the rule
command -v openssl >/dev/null || need+=(openssl)   # release signature interop test
command -v lintian >/dev/null || need+=(lintian)
command -v nix-instantiate >/dev/null || need+=(nix-bin)
command -v nginx >/dev/null || need+=(nginx-light)  # supervisor chaos test and benchmark
[ -x /usr/bin/python3 ] || need+=(python3)           # examples/python (its #!/usr/bin/python3)
# Fleet test (test/fleet): hosts reached over SSH by Debian's Ansible.
command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ansible-playbook >/dev/null || need+=(ansible)
command -v ansible-lint >/dev/null || need+=(ansible-lint)
/usr/bin/python3 -c 'import apt' 2>/dev/null || need+=(python3-apt)  # Ansible's apt module, on the hosts
# test/observability: a real Prometheus (promtool comes with it) scraping
# lodis, and a headless Chromium, driven through ChromeDriver, reading the
# status page. Without their recommends: Prometheus's bring node-exporter,
# avahi and more, services every machine booted from this host's root runs.
bare=()
command -v prometheus >/dev/null || bare+=(prometheus)
command -v chromium >/dev/null || bare+=(chromium)
command -v chromedriver >/dev/null || bare+=(chromium-driver)
[ ${#need[@]} -eq 0 ] && [ ${#bare[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing: ${need[*]} ${bare[*]} — install them as root: apt-get install -y ${need[*]} ${bare[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} ${bare[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}" >/dev/null
[ ${#bare[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${bare[@]}" >/dev/null
# The fleet test's hosts run sshd from this machine's /usr; this machine itself
# needs no sshd: one that deps.sh installed is not left running here.
if [[ " ${need[*]} " == *" openssh-server "* ]] && [ -d /run/systemd/system ]; then
  systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
  echo "openssh-server installed for test/fleet; its ssh.service on this machine is disabled"
fi
# The tests start their own Prometheus; the package's would listen on :9090
# here and in every test machine.
if [[ " ${bare[*]} " == *" prometheus "* ]]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    systemctl --root=/ disable prometheus.service >/dev/null 2>&1 || true
  fi
fi
