#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for tests.
#
#   bash tests/cluster/slurm.sh start    # install (if needed), configure, start; idempotent
#   bash tests/cluster/slurm.sh status   # exit 0 iff slurmctld answers
#   bash tests/cluster/slurm.sh stop     # cancel jobs, stop daemons by their pid files; idempotent
#
# Daemons (all plain background daemons, no init system): munged (as user munge),
# mariadbd (as user mysql), slurmdbd, slurmctld and slurmd (as root, SlurmUser=root).
# Config, state, logs and pid files live under $SLURM_TEST_DIR (default
# /tmp/agent-safety-slurm), except: munged's socket/pid (/run/munge), mariadbd's
# socket/pid (/run/mysqld) and a symlink /etc/slurm/slurm.conf -> $SLURM_TEST_DIR/slurm.conf
# so that client commands work without SLURM_CONF in their environment.
#
# Environment knobs:
#   SLURM_TEST_DIR      base directory (default /tmp/agent-safety-slurm)
#   SLURM_TEST_TIMEOUT  seconds to wait for each daemon (default 60)
#   SLURM_TEST_DB_PORT  TCP port of the private mariadbd on 127.0.0.1 (default 13306)
set -euo pipefail

DIR="${SLURM_TEST_DIR:-/tmp/agent-safety-slurm}"
TIMEOUT="${SLURM_TEST_TIMEOUT:-60}"
DB_PORT="${SLURM_TEST_DB_PORT:-13306}"
CLUSTER="agentsafety"
PARTITION="debug"
DB_NAME="agent_safety_slurm_acct_db"
DB_USER="slurm"
DB_PASS="agent-safety-slurm-test"

CONF="$DIR/slurm.conf"
DBD_CONF="$DIR/slurmdbd.conf"
LOG="$DIR/log"
RUN="$DIR/run"
STATE="$DIR/state"
MYSQL_DATA="$DIR/mysql"

MUNGE_RUN=/run/munge
MUNGE_SOCKET="$MUNGE_RUN/munge.socket.2"
MUNGE_PID="$MUNGE_RUN/munged.pid"
MUNGE_KEY=/etc/munge/munge.key
MYSQL_RUN=/run/mysqld
MYSQL_SOCKET="$MYSQL_RUN/agent-safety-slurm.sock"
MYSQL_PID="$MYSQL_RUN/agent-safety-slurm.pid"
SLURMDBD_PID="$RUN/slurmdbd.pid"
SLURMCTLD_PID="$RUN/slurmctld.pid"
SLURMD_PID="$RUN/slurmd.pid"

PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

export SLURM_CONF="$CONF"

SERVICE=slurm
DIE_HINT="(daemons started so far keep running; '$0 stop' stops them)"
# shellcheck source=../services.sh
source "$(dirname "${BASH_SOURCE[0]}")/../services.sh"

# ---------------------------------------------------------------- processes

# pid_of PIDFILE COMM -> prints the pid and returns 0 iff the process in PIDFILE
# is alive (not a zombie) and its command name is COMM.
pid_of() {
    local file="$1" comm="$2" pid
    pid="$(live_pid "$file")" || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
    echo "$pid"
}

is_running() { pid_of "$1" "$2" >/dev/null; }

# stop_daemon NAME PIDFILE COMM: SIGTERM, wait up to 15 s, then SIGKILL.
stop_daemon() {
    local name="$1" file="$2" comm="$3" pid
    if ! pid="$(pid_of "$file" "$comm")"; then
        rm -f "$file"
        return 0
    fi
    terminate "$name" "$pid" is_running "$file" "$comm"
    rm -f "$file"
}

# wait_for DESCRIPTION LOGFILE COMMAND...: retry COMMAND until it succeeds or TIMEOUT.
wait_for() {
    local what="$1" logfile="$2"
    shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die_with_log "$what did not come up within ${TIMEOUT} s" "$logfile"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- install

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0

    say "installing ${missing[*]} (apt-get)"
    # Keep package maintainer scripts from starting the daemons themselves.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local apt=(apt-get -o DPkg::Lock::Timeout=300 -q)
    local rc=0
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >"$LOG/apt.log" 2>&1 || true
    fi
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
        "${missing[@]}" >>"$LOG/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >>"$LOG/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends \
            "${missing[@]}" >>"$LOG/apt.log" 2>&1 || rc=$?
    fi
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || die_with_log "apt-get install ${missing[*]} failed (rc $rc)" "$LOG/apt.log"
}

# ---------------------------------------------------------------- config

node_line() {  # prints "NodeName=... CPUs=... RealMemory=..." from slurmd -C
    slurmd -C 2>/dev/null | grep -m1 '^NodeName='
}

write_if_changed() {  # write_if_changed FILE MODE  (content on stdin)
    local file="$1" mode="$2" tmp
    tmp="$(mktemp "$file.XXXXXX")"
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    else
        mv -f "$tmp" "$file"
    fi
}

write_config() {
    local line
    line="$(node_line)" || die_with_log "slurmd -C printed no NodeName line" /dev/null
    NODE="$(sed -E 's/^NodeName=([^ ]+).*/\1/' <<<"$line")"
    local real_mem hw
    real_mem="$(grep -oE 'RealMemory=[0-9]+' <<<"$line" | cut -d= -f2)"
    NODE_MEM=$((real_mem * 95 / 100))  # ~95%: slurmd drains a node that reports less than configured
    # Keep the topology fields slurmd reports (CPUs Boards Sockets Cores Threads).
    hw="$(grep -oE '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$line" | tr '\n' ' ')"

    write_if_changed "$CONF" 644 <<EOF
# Generated by tests/cluster/slurm.sh -- single-node test cluster. Do not edit.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$SLURMCTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
KillWait=5
MinJobAge=300
JobRequeue=1
PreemptType=preempt/none
EnforcePartLimits=ALL
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 ${hw}RealMemory=$NODE_MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

    # slurmdbd reads slurmdbd.conf from the directory of \$SLURM_CONF; it must be 600.
    write_if_changed "$DBD_CONF" 600 <<EOF
# Generated by tests/cluster/slurm.sh -- single-node test cluster. Do not edit.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG/slurmdbd.log
PidFile=$SLURMDBD_PID
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    chown root:root "$DBD_CONF"

    # Client commands in processes that do not inherit SLURM_CONF read /etc/slurm/slurm.conf.
    mkdir -p /etc/slurm
    if [[ -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
        mv -n /etc/slurm/slurm.conf /etc/slurm/slurm.conf.agent-safety-bak
    fi
    ln -sfn "$CONF" /etc/slurm/slurm.conf
}

# ---------------------------------------------------------------- daemons

start_munged() {
    if is_running "$MUNGE_PID" munged; then return 0; fi
    mkdir -p "$MUNGE_RUN" /etc/munge /var/lib/munge /var/log/munge
    chown munge:munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chmod 755 "$MUNGE_RUN"
    chown munge:munge /etc/munge
    chmod 700 /etc/munge /var/lib/munge /var/log/munge
    if [[ ! -s "$MUNGE_KEY" ]]; then
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_KEY" --force
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGE_PID"
    touch "$LOG/munged.log"
    chown munge:munge "$LOG/munged.log"
    chmod 640 "$LOG/munged.log"
    runuser -u munge -- /usr/sbin/munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" \
        --pid-file="$MUNGE_PID" --log-file="$LOG/munged.log" </dev/null >>"$LOG/munged.log" 2>&1 ||
        die_with_log "munged failed to start" "$LOG/munged.log"
    wait_for munged "$LOG/munged.log" munge_ok
    say "munged up (pid $(pid_of "$MUNGE_PID" munged || echo '?'))"
}

munge_ok() { munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET"; }

mysql_root() {  # SQL on stdin, as root via unix_socket auth
    mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot
}

start_mariadbd() {
    if ! is_running "$MYSQL_PID" mariadbd; then
        mkdir -p "$MYSQL_RUN" "$MYSQL_DATA"
        chown mysql:mysql "$MYSQL_RUN" "$MYSQL_DATA"
        chmod 755 "$MYSQL_RUN"
        chmod 750 "$MYSQL_DATA"
        touch "$LOG/mariadbd.log"
        chown mysql:mysql "$LOG/mariadbd.log"
        if [[ ! -d "$MYSQL_DATA/mysql" ]]; then
            say "initialising mariadb datadir $MYSQL_DATA"
            mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DATA" \
                --auth-root-authentication-method=socket --skip-test-db \
                >"$LOG/mariadb-install-db.log" 2>&1 ||
                die_with_log "mariadb-install-db failed" "$LOG/mariadb-install-db.log"
        fi
        if port_in_use "$DB_PORT"; then
            die_with_log "port $DB_PORT (SLURM_TEST_DB_PORT) is already in use by something else" /dev/null
        fi
        rm -f "$MYSQL_SOCKET" "$MYSQL_PID"
        setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$MYSQL_DATA" \
            --socket="$MYSQL_SOCKET" --pid-file="$MYSQL_PID" \
            --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
            --log-error="$LOG/mariadbd.log" \
            --innodb-buffer-pool-size=1024M --innodb-log-file-size=64M \
            --innodb-lock-wait-timeout=900 --max-connections=100 \
            </dev/null >>"$LOG/mariadbd.log" 2>&1 &
        # Record the pid now (setsid execs in place here, so $! is mariadbd itself) so that
        # `stop` can find it even if this start fails before mariadbd writes the file.
        echo "$!" >"$MYSQL_PID"
        chown mysql:mysql "$MYSQL_PID"
        disown || true
        wait_for mariadbd "$LOG/mariadbd.log" \
            mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" -uroot ping
        wait_for "mariadbd pid file" "$LOG/mariadbd.log" is_running "$MYSQL_PID" mariadbd
        say "mariadbd up (pid $(pid_of "$MYSQL_PID" mariadbd || echo '?'), 127.0.0.1:$DB_PORT)"
    fi
    mysql_root <<EOF >/dev/null
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
}

sacctmgr_ok() { timeout 15 sacctmgr -n -P show cluster format=Cluster; }

start_slurmdbd() {
    if ! is_running "$SLURMDBD_PID" slurmdbd; then
        port_in_use 6819 && die_with_log "port 6819 (slurmdbd) is already in use by something else" /dev/null
        rm -f "$SLURMDBD_PID"
        slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 ||
            die_with_log "slurmdbd failed to start" "$LOG/slurmdbd.log" "$LOG/slurmdbd.out"
        wait_for "slurmdbd (sacctmgr)" "$LOG/slurmdbd.log" sacctmgr_ok
        wait_for "slurmdbd pid file" "$LOG/slurmdbd.log" is_running "$SLURMDBD_PID" slurmdbd
        say "slurmdbd up (pid $(pid_of "$SLURMDBD_PID" slurmdbd || echo '?'))"
    fi
    if ! sacctmgr_ok 2>/dev/null | grep -qx "$CLUSTER"; then
        timeout 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
            die_with_log "sacctmgr add cluster $CLUSTER failed" "$LOG/slurmdbd.log"
        say "added cluster $CLUSTER to accounting"
    fi
}

ctld_ok() { timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }

start_slurmctld() {
    is_running "$SLURMCTLD_PID" slurmctld && return 0
    port_in_use 6817 && die_with_log "port 6817 (slurmctld) is already in use by something else" /dev/null
    mkdir -p "$STATE/slurmctld"
    rm -f "$SLURMCTLD_PID"
    slurmctld -f "$CONF" </dev/null >>"$LOG/slurmctld.out" 2>&1 ||
        die_with_log "slurmctld failed to start" "$LOG/slurmctld.log" "$LOG/slurmctld.out"
    wait_for "slurmctld (scontrol ping)" "$LOG/slurmctld.log" ctld_ok
    wait_for "slurmctld pid file" "$LOG/slurmctld.log" is_running "$SLURMCTLD_PID" slurmctld
    say "slurmctld up (pid $(pid_of "$SLURMCTLD_PID" slurmctld || echo '?'))"
}

node_state() { timeout 10 sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -n1; }

start_slurmd() {
    if ! is_running "$SLURMD_PID" slurmd; then
        port_in_use 6818 && die_with_log "port 6818 (slurmd) is already in use by something else" /dev/null
        mkdir -p "$STATE/slurmd"
        rm -f "$SLURMD_PID"
        slurmd -f "$CONF" </dev/null >>"$LOG/slurmd.out" 2>&1 ||
            die_with_log "slurmd failed to start" "$LOG/slurmd.log" "$LOG/slurmd.out"
        wait_for "slurmd pid file" "$LOG/slurmd.log" is_running "$SLURMD_PID" slurmd
        say "slurmd up (pid $(pid_of "$SLURMD_PID" slurmd || echo '?'))"
    fi
    # Wait for the node to be usable; resume it once if an earlier run left it down/drained.
    local deadline=$((SECONDS + TIMEOUT)) st resumed=0
    while :; do
        st="$(node_state || true)"
        case "$st" in
            idle | mix | mixed | alloc | allocated) break ;;
            down* | drain* | drng* | fail*)
                if ((!resumed)); then
                    timeout 10 scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        if ((SECONDS >= deadline)); then
            die_with_log "node $NODE not idle within ${TIMEOUT} s (state: '${st:-?}')" \
                "$LOG/slurmd.log" "$LOG/slurmctld.log"
        fi
        sleep 0.5
    done
}

all_running() {
    is_running "$MUNGE_PID" munged && is_running "$MYSQL_PID" mariadbd &&
        is_running "$SLURMDBD_PID" slurmdbd && is_running "$SLURMCTLD_PID" slurmctld &&
        is_running "$SLURMD_PID" slurmd
}

print_up() {
    local node cpus mem
    node="$(timeout 10 sinfo -h -N -p "$PARTITION" -o '%N %c %m' | head -n1)" || node=""
    read -r NODE cpus mem <<<"${node:-? ? ?}"
    say "up (partition $PARTITION, node $NODE, $cpus cpus, $mem MB)"
    echo "export SLURM_CONF=$CONF"
}

# ---------------------------------------------------------------- commands

cmd_start() {
    [[ $EUID -eq 0 ]] || { err "must run as root"; exit 1; }
    mkdir -p "$DIR" "$LOG" "$RUN" "$STATE"
    chmod 755 "$DIR" "$LOG" "$RUN"
    install_packages
    if all_running && ctld_ok; then
        say "already running (SLURM_TEST_DIR=$DIR)"
        print_up
        return 0
    fi
    write_config
    start_munged
    start_mariadbd
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_for "sacctmgr" "$LOG/slurmdbd.log" sacctmgr_ok
    print_up
}

cmd_stop() {
    # Cancel jobs first so that no slurmstepd/job processes outlive the daemons.
    if is_running "$SLURMCTLD_PID" slurmctld && ctld_ok; then
        local jobs i
        jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | xargs echo || true)"
        if [[ -n "${jobs// /}" ]]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            timeout 15 scancel $jobs >/dev/null 2>&1 || true
            for ((i = 0; i < 40; i++)); do  # KillWait=5; allow 20 s
                [[ -z "$(timeout 10 squeue -h -t R,CG,S -o %A 2>/dev/null || true)" ]] && break
                sleep 0.5
            done
        fi
    fi
    stop_daemon slurmd "$SLURMD_PID" slurmd
    stop_daemon slurmctld "$SLURMCTLD_PID" slurmctld
    stop_daemon slurmdbd "$SLURMDBD_PID" slurmdbd
    stop_daemon mariadbd "$MYSQL_PID" mariadbd
    stop_daemon munged "$MUNGE_PID" munged
    say "stopped"
}

cmd_status() {
    local name file comm pid
    for spec in "munged:$MUNGE_PID:munged" "mariadbd:$MYSQL_PID:mariadbd" \
        "slurmdbd:$SLURMDBD_PID:slurmdbd" "slurmctld:$SLURMCTLD_PID:slurmctld" \
        "slurmd:$SLURMD_PID:slurmd"; do
        IFS=: read -r name file comm <<<"$spec"
        if pid="$(pid_of "$file" "$comm")"; then
            say "$name running (pid $pid)"
        else
            say "$name not running"
        fi
    done
    if command -v scontrol >/dev/null && [[ -f "$CONF" ]] && ctld_ok; then
        timeout 10 sinfo || true
        echo "export SLURM_CONF=$CONF"
        return 0
    fi
    say "slurmctld is not answering"
    return 1
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    restart) cmd_stop && cmd_start ;;
    *)
        echo "usage: $0 start|stop|status|restart" >&2
        exit 2
        ;;
esac
