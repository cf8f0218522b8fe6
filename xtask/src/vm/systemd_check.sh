#!/bin/bash
# The guest side of `cargo xtask vm-systemd` (xtask/src/vm/systemd.rs), run by systemd as
# oomtrace-vmcheck.service once multi-user.target is reached. Installs the .deb the host put in
# /root, then checks what systemd itself makes of deploy/systemd/oomtrace.service. Each check is
# framed by "@@oomtrace-vm begin/end NAME rc=N" (the host's qemu.rs reads them) and prints one
# PASS or FAIL line per assertion. Then the machine powers off.
exec >/dev/ttyS0 2>&1
set -u
MARK=@@oomtrace-vm
DEB=/root/oomtrace.deb
JSONL=/var/lib/oomtrace/oomtrace.jsonl
# The unit's CapabilityBoundingSet as a mask: CAP_DAC_READ_SEARCH (2), CAP_SYS_PTRACE (19),
# CAP_SYS_NICE (23), CAP_SYS_RESOURCE (24), CAP_PERFMON (38), CAP_BPF (39).
CAPS=000000c001880004
CAP_NAMES="cap_dac_read_search cap_sys_ptrace cap_sys_nice cap_sys_resource cap_perfmon cap_bpf"

uptime_s() { cut -d' ' -f1 /proc/uptime; }
begin() {
    CUR=$1
    FAILED=0
    echo "$MARK begin $CUR"
    echo "[uptime $(uptime_s)s] check $CUR"
}
end() { echo "$MARK end $CUR rc=$FAILED"; }
pass() { echo "PASS $CUR: $*"; }
fail() {
    echo "FAIL $CUR: $*"
    FAILED=1
}
# expect LABEL GOT WANT
expect() {
    if [ "$2" = "$3" ]; then pass "$1 = $2"; else fail "$1 = '$2', want '$3'"; fi
}
# ok LABEL COMMAND...: the command succeeds.
ok() {
    local label=$1
    shift
    if "$@"; then pass "$label"; else fail "$label (rc=$?)"; fi
}
# wait_for SECONDS COMMAND...: polls once a second.
wait_for() {
    local n=$1 i
    shift
    for ((i = 0; i < n; i++)); do
        "$@" && return 0
        sleep 1
    done
    return 1
}
prop() { systemctl show "$1" -p "$2" --value; }
is_state() { [ "$(systemctl is-active "$1")" = "$2" ]; }
# GET /readyz on the agent's default address, with bash's /dev/tcp (no curl here).
ready() {
    timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/9742 &&
        printf "GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
        grep -q '^HTTP/1\.[01] 200'
}
# wait_ready SECONDS: the agent answers /readyz; gives up early when systemd restarted it.
wait_ready() {
    local n=$1 i base
    base=$(prop oomtrace NRestarts)
    for ((i = 0; i < n; i++)); do
        ready && return 0
        [ "$(prop oomtrace NRestarts)" -gt "$base" ] && return 1
        sleep 1
    done
    return 1
}
has_result() { [ "$(prop "$1" Result)" = "$2" ]; }
# On a failed start: the mounts under /sys as the unit's sandbox has them (an ExecStartPre in a
# runtime drop-in), and which sandbox settings make /sys/fs/bpf read-only (transient units:
# on systemd 252, ProtectKernelTunables=yes does, despite ReadWritePaths= or BindPaths=).
diagnose() {
    echo "diag: host /sys/fs/bpf: $(awk '$5 == "/sys/fs/bpf" { print $6, $9, $11 }' /proc/self/mountinfo)"
    systemctl stop oomtrace
    mkdir -p /run/systemd/system/oomtrace.service.d
    printf '#!/bin/sh\nawk '"'"'$5 ~ "^/sys" { print "ns:", $5, $6, $9 }'"'"' /proc/self/mountinfo\n' \
        >/run/oomtrace-vmdiag
    chmod 755 /run/oomtrace-vmdiag
    printf '[Service]\nExecStartPre=/run/oomtrace-vmdiag\n' \
        >/run/systemd/system/oomtrace.service.d/diag.conf
    systemctl daemon-reload
    systemctl start oomtrace
    sleep 3
    systemctl stop oomtrace
    journalctl -u oomtrace -o cat -q --no-pager | grep '^ns:' | sed 's/^/diag: unit /' | tail -n 12
    rm -f /run/systemd/system/oomtrace.service.d/diag.conf
    local p
    for p in "ProtectKernelTunables=yes ReadWritePaths=-/sys/fs/bpf" \
        "ProtectSystem=strict ReadWritePaths=-/sys/fs/bpf" \
        "ProtectControlGroups=yes ReadWritePaths=-/sys/fs/bpf" \
        "PrivateDevices=yes ReadWritePaths=-/sys/fs/bpf" \
        "ProtectKernelTunables=yes BindPaths=/sys/fs/bpf" \
        "ProtectSystem=strict ReadOnlyPaths=/sys ReadWritePaths=-/sys/fs/bpf"; do
        local args=() a
        for a in $p; do args+=(-p "$a"); done
        echo "diag: transient $p: /sys/fs/bpf $(systemd-run --quiet --wait --pipe "${args[@]}" \
            /run/oomtrace-vmdiag 2>&1 | awk '$2 == "/sys/fs/bpf" { print $3 }' | tr '\n' ' ')"
    done
}
status_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
# The mount options (field 6) of mount point $2 in the mount namespace of pid $1.
mount_opts() { awk -v m="$2" '$5 == m { o = $6 } END { print o }' "/proc/$1/mountinfo"; }
# The first oom_kill record of unit $1 in the agent's file.
record_of() {
    [ -r "$JSONL" ] && jq -c --arg u "$1" \
        'select(.event == "oom_kill" and .systemd.unit == $u)' "$JSONL" | head -n1
}
has_record() { [ -n "$(record_of "$1")" ]; }
# hog UNIT: a transient service limited to 32 MiB that allocates until the kernel kills it.
hog() {
    systemd-run --quiet --unit="$1" -p MemoryMax=32M -p MemorySwapMax=0 \
        /usr/bin/oomtrace hog --comm demo-hog
}
# check_kill UNIT: the kill of `hog UNIT`, as systemd, the kernel and the agent saw it.
check_kill() {
    local unit=$1 svc=$1.service rec pid
    if wait_for 180 has_result "$svc" oom-kill; then
        pass "systemd: $svc Result=oom-kill"
    else
        fail "systemd: $svc Result=$(prop "$svc" Result), want oom-kill"
    fi
    pid=$(prop "$svc" ExecMainPID)
    if journalctl -k -q --no-pager | grep -q "Killed process $pid (demo-hog)"; then
        pass "kernel log: Killed process $pid (demo-hog)"
    else
        fail "kernel log has no 'Killed process $pid (demo-hog)'"
    fi
    if wait_for 60 has_record "$svc"; then
        rec=$(record_of "$svc")
        echo "record: $rec"
        expect "record .oom.memcg.path" "$(jq -r .oom.memcg.path <<<"$rec")" "/system.slice/$svc"
        expect "record .victim.pid" "$(jq -r .victim.pid <<<"$rec")" "$pid"
        expect "record .victim.comm" "$(jq -r .victim.comm <<<"$rec")" demo-hog
        expect "record .oom.constraint" "$(jq -r .oom.constraint <<<"$rec")" memcg
        expect "record .oom.memcg.limit_bytes" "$(jq -r .oom.memcg.limit_bytes <<<"$rec")" 33554432
    else
        fail "no oom_kill record with systemd.unit=$svc in $JSONL"
        tail -n 3 "$JSONL" 2>&1
    fi
    if journalctl -u oomtrace -o cat -q --no-pager | grep '"event":"oom_kill"' |
        grep -q "\"unit\":\"$svc\""; then
        pass "journalctl -u oomtrace has the record of $svc"
    else
        fail "journalctl -u oomtrace has no record of $svc"
        journalctl -u oomtrace -o cat -q --no-pager | tail -n 5
    fi
}

echo "$MARK boot $(uname -r) $(grep MemTotal /proc/meminfo) $(systemctl --version | head -n1)"
echo "cgroup: $(stat -fc %T /sys/fs/cgroup), bpffs: $(stat -fc %T /sys/fs/bpf 2>&1)"

begin install
if dpkg -i "$DEB"; then pass "dpkg -i $DEB"; else fail "dpkg -i $DEB (rc=$?)"; fi
expect "systemctl is-enabled oomtrace" "$(systemctl is-enabled oomtrace)" enabled
if wait_for 120 is_state oomtrace active; then
    pass "systemctl is-active oomtrace = active (the postinst started it)"
else
    fail "systemctl is-active oomtrace = $(systemctl is-active oomtrace)"
fi
if wait_ready 240; then
    pass "GET /readyz = 200 at uptime $(uptime_s)s"
else
    fail "GET /readyz never answered 200 ($(prop oomtrace NRestarts) restarts)"
    systemctl --no-pager status oomtrace | head -n 12
    journalctl -u oomtrace -o cat -q --no-pager | tail -n 8
    diagnose
fi
end

begin sandbox
PID=$(prop oomtrace MainPID)
echo "agent pid $PID: $(tr '\0' ' ' <"/proc/$PID/cmdline")"
expect "CapEff" "$(status_field "$PID" CapEff)" "$CAPS"
expect "CapPrm" "$(status_field "$PID" CapPrm)" "$CAPS"
expect "CapBnd" "$(status_field "$PID" CapBnd)" "$CAPS"
expect "CapAmb" "$(status_field "$PID" CapAmb)" 0000000000000000
expect "NoNewPrivs" "$(status_field "$PID" NoNewPrivs)" 1
expect "Seccomp" "$(status_field "$PID" Seccomp)" 2
expect "oom_score_adj" "$(cat "/proc/$PID/oom_score_adj")" -999
expect "systemctl show CapabilityBoundingSet" "$(prop oomtrace CapabilityBoundingSet)" "$CAP_NAMES"
expect "systemctl show ProtectSystem" "$(prop oomtrace ProtectSystem)" strict
# ProtectKernelTunables= as the unit spells it out (that setting would keep bpffs read-only).
expect "systemctl show ReadOnlyPaths" "$(prop oomtrace ReadOnlyPaths | cut -d' ' -f1-3)" \
    "/sys /proc/sys /proc/sysrq-trigger"
expect "systemctl show InaccessiblePaths" "$(prop oomtrace InaccessiblePaths)" \
    "-/proc/kallsyms -/proc/kcore"
expect "systemctl show ProtectControlGroups" "$(prop oomtrace ProtectControlGroups)" yes
expect "systemctl show PrivateDevices" "$(prop oomtrace PrivateDevices)" yes
expect "systemctl show MemoryMax" "$(prop oomtrace MemoryMax)" 268435456
expect "memory.max of its cgroup" \
    "$(cat /sys/fs/cgroup/system.slice/oomtrace.service/memory.max)" 268435456
# The sandbox as the agent's own mount namespace has it.
opts=$(mount_opts "$PID" /)
[[ $opts == ro* ]] && pass "/ is $opts in its namespace" || fail "/ is '$opts', want ro"
opts=$(mount_opts "$PID" /sys)
[[ $opts == ro* ]] && pass "/sys is $opts in its namespace" || fail "/sys is '$opts', want ro"
opts=$(mount_opts "$PID" /proc/sys)
[[ $opts == ro* ]] && pass "/proc/sys is $opts in its namespace" || fail "/proc/sys is '$opts', want ro"
opts=$(mount_opts "$PID" /sys/kernel/tracing)
[[ $opts == ro* ]] && pass "/sys/kernel/tracing is $opts" || fail "/sys/kernel/tracing is '$opts', want ro"
opts=$(mount_opts "$PID" /sys/fs/cgroup)
[[ $opts == ro* ]] && pass "/sys/fs/cgroup is $opts" || fail "/sys/fs/cgroup is '$opts', want ro"
opts=$(mount_opts "$PID" /sys/fs/bpf)
[[ $opts == rw* ]] && pass "/sys/fs/bpf is $opts (ReadWritePaths)" || fail "/sys/fs/bpf is '$opts', want rw"
opts=$(mount_opts "$PID" /var/lib/oomtrace)
[[ $opts == rw* ]] && pass "/var/lib/oomtrace is $opts" || fail "/var/lib/oomtrace is '$opts', want rw"
pins=$(find /sys/fs/bpf/oomtrace -mindepth 1 2>/dev/null | wc -l)
if [ "$pins" -gt 0 ]; then
    pass "$pins pins under /sys/fs/bpf/oomtrace"
    find /sys/fs/bpf/oomtrace -maxdepth 2 | head -n 8
else
    fail "no pins under /sys/fs/bpf/oomtrace"
fi
expect "mode of /var/lib/oomtrace" "$(stat -c %a /var/lib/oomtrace)" 700
end

begin oom-kill
hog oomtrace-demo || fail "systemd-run oomtrace-demo (rc=$?)"
check_kill oomtrace-demo
expect "mode of $JSONL" "$(stat -c %a "$JSONL")" 600
expect "agent still active after the kill" "$(systemctl is-active oomtrace)" active
end

begin stop-restart
OLD=$(prop oomtrace MainPID)
ok "systemctl stop oomtrace" systemctl stop oomtrace
expect "is-active after stop" "$(systemctl is-active oomtrace)" inactive
expect "Result after stop" "$(prop oomtrace Result)" success
expect "ExecMainStatus after stop" "$(prop oomtrace ExecMainStatus)" 0
[ -d "/proc/$OLD" ] && fail "pid $OLD still alive" || pass "pid $OLD is gone"
pins=$(find /sys/fs/bpf/oomtrace -mindepth 1 2>/dev/null | wc -l)
[ "$pins" -gt 0 ] && pass "$pins pins stay while stopped" || fail "pins gone after stop"
ok "systemctl start oomtrace" systemctl start oomtrace
wait_ready 240 && pass "ready again after start" || fail "not ready after start"
ok "systemctl restart oomtrace" systemctl restart oomtrace
if wait_for 60 is_state oomtrace active && wait_ready 240; then
    pass "active and ready after restart at uptime $(uptime_s)s"
else
    fail "after restart: $(systemctl is-active oomtrace), not ready"
fi
NEW=$(prop oomtrace MainPID)
[ "$NEW" != "$OLD" ] && [ "$NEW" != 0 ] && pass "new MainPID $NEW (was $OLD)" ||
    fail "MainPID $NEW after restart (was $OLD)"
expect "NRestarts (no crash)" "$(prop oomtrace NRestarts)" 0
# The restarted agent still records, under systemd's unit names.
hog oomtrace-demo2 || fail "systemd-run oomtrace-demo2 (rc=$?)"
check_kill oomtrace-demo2
end

begin remove
ok "dpkg -r oomtrace" dpkg -r oomtrace
expect "is-active after dpkg -r" "$(systemctl is-active oomtrace)" inactive
if [ -e /sys/fs/bpf/oomtrace ] && [ -n "$(ls -A /sys/fs/bpf/oomtrace)" ]; then
    fail "pins left after dpkg -r: $(find /sys/fs/bpf/oomtrace -mindepth 1 | head -n 5)"
else
    pass "no pins under /sys/fs/bpf/oomtrace after dpkg -r"
fi
[ -e /usr/bin/oomtrace ] && fail "/usr/bin/oomtrace still there" || pass "/usr/bin/oomtrace removed"
[ -s "$JSONL" ] && pass "records kept after remove" || fail "$JSONL gone after remove"
ok "dpkg --purge oomtrace" dpkg --purge oomtrace
[ -e /var/lib/oomtrace ] && fail "/var/lib/oomtrace left after purge" ||
    pass "/var/lib/oomtrace removed by purge"
end

echo "$MARK done"
sync
systemctl poweroff -ff
