#!/usr/bin/env python3
"""Scenarios of the differential suite (run by tests/diff/run).

Every scenario runs against both daemons (one thread each, at the same
time); its transcript (each command, its stdout, stderr and exit code, or
what a docker-py call returned) is normalised and the two are compared.
"""
import argparse
import difflib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time

# The cgroup files a limit lands in (cgroup v1 and v2 paths; the first that
# exists inside the container).
CG = {
    "mem": "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max",
    "soft": "/sys/fs/cgroup/memory/memory.soft_limit_in_bytes /sys/fs/cgroup/memory.low",
    "memsw": "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes /sys/fs/cgroup/memory.swap.max",
    "swappiness": "/sys/fs/cgroup/memory/memory.swappiness",
    "oom": "/sys/fs/cgroup/memory/memory.oom_control",
    "quota": "/sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max",
    "period": "/sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us /sys/fs/cgroup/cpu.max",
    "shares": "/sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu,cpuacct/cpu.shares /sys/fs/cgroup/cpu.weight",
    "cpus": "/sys/fs/cgroup/cpuset/cpuset.cpus /sys/fs/cgroup/cpuset.cpus",
    "mems": "/sys/fs/cgroup/cpuset/cpuset.mems /sys/fs/cgroup/cpuset.mems",
    "pids": "/sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max",
    "blkw": "/sys/fs/cgroup/blkio/blkio.weight /sys/fs/cgroup/io.weight",
    "rbps": "/sys/fs/cgroup/blkio/blkio.throttle.read_bps_device /sys/fs/cgroup/io.max",
    "wiops": "/sys/fs/cgroup/blkio/blkio.throttle.write_iops_device /sys/fs/cgroup/io.max",
    "devices": "/sys/fs/cgroup/devices/devices.list",
}


def cg(key):
    files = CG[key]
    return f"for f in {files}; do [ -f $f ] && {{ cat $f; break; }}; done"


def run(flags, inner, rm=True):
    """`docker run` with FLAGS whose effect INNER (a shell command run in
    the container) shows."""
    return f"docker run {'--rm ' if rm else ''}{flags} $IMG sh -c {shlex.quote(inner)}"


def insp(name, fmt):
    return f"docker inspect --format {shlex.quote(fmt)} {name}"


SCENARIOS = []


def sc(name, *steps):
    SCENARIOS.append((name, list(steps)))


# ---- every flag of docker run / create -------------------------------------
sc("run:--add-host", run("--add-host h1.test:10.1.2.3", "grep h1.test /etc/hosts"))
sc("run:--annotation", "docker create --name d15a --annotation org.x=1 $IMG", insp("d15a", "{{json .HostConfig.Annotations}}"))
sc("run:--attach", "docker run --rm -a stdout $IMG sh -c 'echo out; echo err >&2'")
sc("run:--blkio-weight", run("--blkio-weight 300", cg("blkw")))
sc("run:--blkio-weight-device", run("--blkio-weight-device /dev/null:300", "echo ran"))
sc("run:--cap-add", run("--cap-add NET_ADMIN", "grep CapEff /proc/self/status"))
sc("run:--cap-drop", run("--cap-drop CHOWN", "grep CapEff /proc/self/status; chown 1 /tmp; echo rc=$?"))
sc("run:--cgroup-parent", "docker create --name d15cg --cgroup-parent d15parent $IMG", insp("d15cg", "{{.HostConfig.CgroupParent}}"))
sc("run:--cgroupns", "docker create --name d15cn --cgroupns private $IMG", insp("d15cn", "{{.HostConfig.CgroupnsMode}}"))
sc("run:--cidfile", "docker run --rm --cidfile $TMPD/cid $IMG true", "wc -c < $TMPD/cid")
sc("run:--cpu-period", run("--cpu-period 50000 --cpu-quota 25000", cg("period") + "; " + cg("quota")))
sc("run:--cpu-quota", run("--cpu-quota 30000", cg("quota")))
sc("run:--cpu-rt-period", run("--cpu-rt-period 1000", "echo ran"))
sc("run:--cpu-rt-runtime", run("--cpu-rt-runtime 100", "echo ran"))
sc("run:--cpu-shares", run("-c 512", cg("shares")))
sc("run:--cpus", run("--cpus 0.5", cg("quota")))
sc("run:--cpu-count", run("--cpu-count 1", "echo ran"))
sc("run:--cpu-percent", run("--cpu-percent 50", "echo ran"))
sc("run:--cpuset-cpus", run("--cpuset-cpus 0", cg("cpus")))
sc("run:--cpuset-mems", run("--cpuset-mems 0", cg("mems")))
sc("run:--detach", "docker run -d --name d15d $IMG sh -c 'echo bg'", "docker wait d15d", "docker logs d15d")
sc("run:--detach-keys", "docker run -d --detach-keys ctrl-x,x --name d15dk $IMG true", "docker wait d15dk")
sc("run:--device", run("--device /dev/null:/dev/mynull", "ls -l /dev/mynull | cut -c1-10"))
sc("run:--device-cgroup-rule", run("--device-cgroup-rule 'c 1:3 rwm'", "echo ran"))
sc("run:--device-read-bps", run("--device-read-bps /dev/null:1mb", "echo ran"))
sc("run:--device-read-iops", run("--device-read-iops /dev/null:100", "echo ran"))
sc("run:--device-write-bps", run("--device-write-bps /dev/null:1mb", "echo ran"))
sc("run:--device-write-iops", run("--device-write-iops /dev/null:100", "echo ran"))
sc("run:--disable-content-trust", run("--disable-content-trust", "echo ran"))
sc("run:--dns", run("--dns 10.9.9.9", "grep nameserver /etc/resolv.conf"))
sc("run:--dns-option", run("--dns-option ndots:3", "grep options /etc/resolv.conf"))
sc("run:--dns-search", run("--dns-search example.test", "grep search /etc/resolv.conf"))
sc("run:--domainname", run("--domainname d.test", "cat /proc/sys/kernel/domainname"))
sc("run:--entrypoint", "docker run --rm --entrypoint echo $IMG a b")
sc("run:--env", run("-e A=1 -e B", "echo A=$A B=${B-unset} FOO=$FOO"))
sc("run:--env-file", "printf 'X=1\\n# c\\nY=two\\n' > $TMPD/envf", run("--env-file $TMPD/envf", "echo $X $Y"))
sc("run:--expose", "docker create --name d15e --expose 9000 --expose 7000-7001/udp $IMG", insp("d15e", "{{json .Config.ExposedPorts}}"))
sc("run:--gpus", run("--gpus all", "echo ran"))
sc("run:--group-add", run("--group-add 1234", "id -G"))
sc("run:--health-cmd", "docker run -d --name d15h --health-cmd 'test -e /tmp' --health-interval 1s --health-retries 2 --health-timeout 2s --health-start-period 1s $IMG sleep 30",
   "sleep 4", insp("d15h", "{{.State.Health.Status}} {{.Config.Healthcheck.Test}} {{.Config.Healthcheck.Retries}}"))
sc("run:--health-cmd unhealthy", "docker run -d --name d15hu --health-cmd false --health-interval 1s --health-retries 1 $IMG sleep 30",
   "sleep 4", insp("d15hu", "{{.State.Health.Status}} {{.State.Health.FailingStreak}}"))
sc("run:--health-start-interval", "docker create --name d15hs --health-cmd true --health-start-interval 1s $IMG", insp("d15hs", "{{.Config.Healthcheck.StartInterval}}"))
sc("run:--no-healthcheck", "docker create --name d15nh --no-healthcheck $IMG", insp("d15nh", "{{.Config.Healthcheck.Test}}"))
sc("run:--hostname", run("-h box1", "hostname; grep box1 /etc/hosts | wc -l"))
sc("run:--init", run("--init", "cat /proc/1/comm"))
sc("run:--interactive", "echo piped | docker run --rm -i $IMG cat")
sc("run:--io-maxbandwidth", run("--io-maxbandwidth 1m", "echo ran"))
sc("run:--io-maxiops", run("--io-maxiops 100", "echo ran"))
sc("run:--ip", "docker network create --subnet 10.253.15.0/24 d15n", run("--network d15n --ip 10.253.15.50", "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'"))
sc("run:--ip6", run("--ip6 2001:db8::33", "echo ran"))
sc("run:--ipc", "docker create --name d15i --ipc shareable $IMG", insp("d15i", "{{.HostConfig.IpcMode}}"), run("--ipc container:d15i", "echo ran"))
sc("run:--isolation", run("--isolation default", "echo ran"))
sc("run:--kernel-memory", run("--kernel-memory 50m", "echo ran"))
sc("run:--label", "docker create --name d15l -l a=1 -l b $IMG", insp("d15l", "{{json .Config.Labels}}"))
sc("run:--label-file", "printf 'x=1\\ny=2\\n' > $TMPD/lf", "docker create --name d15lf --label-file $TMPD/lf $IMG", insp("d15lf", "{{json .Config.Labels}}"))
sc("run:--link", "docker network create d15n", "docker run -d --name d15target --network d15n $IMG sleep 30",
   run("--network d15n --link d15target:alias1", "ping -c1 -W2 alias1 >/dev/null && echo reached"))
sc("run:--link-local-ip", "docker network create d15n", run("--network d15n --link-local-ip 169.254.5.5", "ip -4 addr | grep -c 169.254.5.5"))
sc("run:--log-driver", "docker run --name d15ld --log-driver none $IMG echo hi", "docker logs d15ld")
sc("run:--log-opt", "docker run --name d15lo --log-opt max-size=1m --log-opt max-file=2 $IMG echo hi", "docker logs d15lo", insp("d15lo", "{{json .HostConfig.LogConfig}}"))
sc("run:--mac-address", "docker network create d15n", run("--network d15n --mac-address 02:42:0a:0b:0c:0d", "cat /sys/class/net/eth0/address"))
sc("run:--memory", run("-m 64m", cg("mem")))
sc("run:--memory-reservation", run("--memory-reservation 32m", cg("soft")))
sc("run:--memory-swap", run("-m 64m --memory-swap 128m", cg("memsw")))
sc("run:--memory-swappiness", run("--memory-swappiness 10", cg("swappiness")))
sc("run:--mount bind", "mkdir -p $TMPD/b && echo f > $TMPD/b/f", run("--mount type=bind,src=$TMPD/b,dst=/b,readonly", "cat /b/f; touch /b/x; echo rc=$?"))
sc("run:--mount volume", run("--mount type=volume,src=d15v,dst=/v", "echo hi > /v/f"), run("-v d15v:/v", "cat /v/f"), "docker volume rm d15v")
sc("run:--mount tmpfs", run("--mount type=tmpfs,dst=/t,tmpfs-size=1m", "grep ' /t ' /proc/mounts | cut -d' ' -f1-3"))
sc("run:--name", "docker run --name d15name $IMG true", "docker ps -a --filter name=d15name --format '{{.Names}} {{.Status}}'")
sc("run:--network none", run("--network none", "ls /sys/class/net | sort"))
sc("run:--network host", run("--network host", "[ -e /sys/class/net/eth0 ] && echo host-eth0; hostname"), "hostname")
sc("run:--network user", "docker network create d15n", run("--network d15n", "ls /sys/class/net | sort"))
sc("run:--network-alias", "docker network create d15n", "docker run -d --name d15al --network d15n --network-alias svc1 $IMG sleep 30",
   run("--network d15n", "ping -c1 -W2 svc1 >/dev/null && echo reached"))
sc("run:--oom-kill-disable", run("-m 64m --oom-kill-disable", cg("oom") + " | head -1"))
sc("run:--oom-score-adj", run("--oom-score-adj 100", "cat /proc/self/oom_score_adj"))
sc("run:--pid", run("--pid host", "[ -e /proc/1/comm ] && cat /proc/1/comm"))
sc("run:--pids-limit", run("--pids-limit 50", cg("pids")))
sc("run:--platform", run("--platform linux/amd64", "echo ran"))
sc("run:--privileged", run("--privileged", "grep CapEff /proc/self/status; [ -e /dev/loop0 ] && echo loop"))
sc("run:--publish", "docker network create d15n", "docker run -d --name d15p --network d15n -p 127.0.0.1:18915:8080 $IMG sh -c 'echo hi | nc -l -p 8080'",
   "sleep 1", "docker port d15p", "nc -w2 127.0.0.1 18915 </dev/null || busybox nc -w2 127.0.0.1 18915 </dev/null")
sc("run:--publish-all", "docker network create d15n", "docker run -d --name d15pa --network d15n -P $IMG sleep 30", "docker port d15pa | sed 's/:[0-9]*$/:PORT/'")
sc("run:--pull", "docker run --rm --pull never $IMG echo ran", "docker run --rm --pull missing $IMG echo ran")
sc("run:--quiet", "docker run --rm -q $IMG echo ran")
sc("run:--read-only", run("--read-only", "touch /x; echo rc=$?; touch /tmp/x; echo rc=$?"))
sc("run:--restart", "docker run -d --name d15r --restart on-failure:2 $IMG sh -c 'exit 3'", "sleep 5", insp("d15r", "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}}"))
sc("run:--rm", "docker run --rm --name d15rm $IMG true", "docker ps -aq --filter name=d15rm | wc -l")
sc("run:--runtime", run("--runtime runc", "echo ran"))
sc("run:--security-opt", run("--security-opt no-new-privileges", "grep NoNewPrivs /proc/self/status"))
sc("run:--shm-size", run("--shm-size 32m", "df -k /dev/shm | tail -1 | awk '{print $2}'"))
sc("run:--sig-proxy", "docker run --rm --sig-proxy=false $IMG echo ran")
sc("run:--stop-signal", "docker create --name d15ss --stop-signal SIGUSR1 --stop-timeout 3 $IMG", insp("d15ss", "{{.Config.StopSignal}} {{.Config.StopTimeout}}"))
sc("run:--storage-opt", run("--storage-opt size=1G", "echo ran"))
sc("run:--sysctl", run("--sysctl net.ipv4.ip_forward=1 --network none", "cat /proc/sys/net/ipv4/ip_forward"))
sc("run:--tmpfs", run("--tmpfs /run:size=1m,mode=1777", "grep ' /run ' /proc/mounts | cut -d' ' -f1-3; stat -c %a /run"))
sc("run:--tty", "docker run --rm -t $IMG sh -c 'tty; echo x'")
sc("run:--ulimit", run("--ulimit nofile=512:512", "ulimit -n"))
sc("run:--use-api-socket", run("--use-api-socket", "echo ran"))
sc("run:--user", run("-u 1000:1000", "id"))
sc("run:--userns", "docker create --name d15un --userns host $IMG", insp("d15un", "{{.HostConfig.UsernsMode}}"))
sc("run:--uts", run("--uts host", "hostname"), "hostname")
sc("run:--volume bind", "mkdir -p $TMPD/vb && echo f > $TMPD/vb/f", run("-v $TMPD/vb:/vb:ro", "cat /vb/f; touch /vb/x; echo rc=$?"))
sc("run:--volume anon", "docker run --name d15va -v /data $IMG sh -c 'echo x > /data/f'", insp("d15va", "{{range .Mounts}}{{.Type}} {{.Destination}} {{.RW}}{{end}}"))
sc("run:--volume-driver", run("--volume-driver local -v d15vd:/v", "echo ran"), "docker volume rm d15vd")
sc("run:--volumes-from", "docker create --name d15vf -v /shared $IMG", run("--volumes-from d15vf", "grep -c ' /shared ' /proc/mounts"))
sc("run:--workdir", run("-w /tmp/wd", "pwd"))
sc("run:exit code", run("", "exit 7"))
sc("run:image defaults", run("", "pwd; echo $FOO; id -u"))
sc("run:no such image", "docker run --rm --pull never d15-nonexistent-image true")
sc("run:bad flag value", "docker run --rm -m 1k $IMG true")

# ---- containers ---------------------------------------------------------------
sc("create/start/attach", "docker create --name d15c $IMG echo created", "docker start -a d15c", insp("d15c", "{{.State.Status}} {{.State.ExitCode}}"))
sc("ps formats", "docker run -d --name d15ps $IMG sleep 30", "docker ps --filter name=d15ps --format '{{.Names}}\\t{{.Image}}\\t{{.Command}}\\t{{.Status}}'",
   "docker ps -a --filter name=d15ps --format '{{.Names}} {{.Ports}} {{.Labels}}' ", "docker ps -q --filter name=d15ps | wc -l")
sc("ps table", "docker run -d --name d15pt $IMG sleep 30", "docker ps --filter name=d15pt | sed 's/  */ /g'")
sc("inspect fields", "docker create --name d15in -e Z=1 -w /w -u 5 $IMG echo x",
   insp("d15in", "{{.Name}} {{.Path}} {{json .Args}} {{.Config.User}} {{.Config.WorkingDir}} {{json .Config.Env}} {{json .Config.Cmd}} {{.State.Status}} {{.HostConfig.NetworkMode}} {{.RestartCount}} {{.Driver}}"))
sc("logs", "docker run --name d15lg $IMG sh -c 'echo a; echo b >&2; echo c'", "docker logs d15lg", "docker logs --tail 1 d15lg", "docker logs -t d15lg | cut -c1-4 | sort -u")
sc("logs --since", "docker run --name d15lgs $IMG sh -c 'echo a'", "docker logs --since 1h d15lgs", "docker logs --until 2000-01-01T00:00:00Z d15lgs")
sc("logs -f", "docker run -d --name d15lf $IMG sh -c 'echo 1; sleep 1; echo 2'", "timeout 10 docker logs -f d15lf")
sc("exec", "docker run -d --name d15x $IMG sleep 30", "docker exec d15x echo hi", "docker exec -e E=2 -w /tmp -u 1 d15x sh -c 'echo $E; pwd; id -u'",
   "docker exec d15x sh -c 'exit 4'", "docker exec d15x nonexistent-cmd", "echo in | docker exec -i d15x cat")
sc("exec stopped", "docker create --name d15xs $IMG", "docker exec d15xs true")
sc("cp", "docker run -d --name d15cp $IMG sleep 30", "echo data > $TMPD/cpf", "docker cp $TMPD/cpf d15cp:/tmp/", "docker exec d15cp cat /tmp/cpf",
   "docker cp d15cp:/etc/passwd $TMPD/pw", "head -1 $TMPD/pw", "docker cp d15cp:/nonexistent $TMPD/x", "docker cp d15cp:/home - | tar -t | sort")
sc("stop/start/restart", "docker run -d --name d15st $IMG sleep 30", "docker stop -t 1 d15st", insp("d15st", "{{.State.Status}} {{.State.ExitCode}}"),
   "docker start d15st", insp("d15st", "{{.State.Status}}"), "docker restart -t 1 d15st", insp("d15st", "{{.State.Status}} {{.RestartCount}}"))
sc("kill", "docker run -d --name d15k $IMG sleep 30", "docker kill -s USR1 d15k", "docker wait d15k", "docker kill d15k")
sc("pause", "docker run -d --name d15pz $IMG sleep 30", "docker pause d15pz", insp("d15pz", "{{.State.Status}} {{.State.Paused}}"), "docker unpause d15pz", insp("d15pz", "{{.State.Status}}"))
sc("rename", "docker create --name d15rn $IMG", "docker rename d15rn d15rn2", "docker ps -a --filter name=d15rn --format '{{.Names}}'")
sc("wait", "docker run -d --name d15w $IMG sh -c 'exit 5'", "docker wait d15w", "docker wait --condition=removed d15w & sleep 0.5; docker rm d15w; wait")
sc("top", "docker run -d --name d15tp $IMG sleep 30", "docker top d15tp | awk '{print $NF}'", "docker top d15tp -o pid,comm | tail -n +2 | awk '{print $2}'")
sc("port none", "docker create --name d15po $IMG", "docker port d15po")
sc("rm", "docker run -d --name d15rmf $IMG sleep 30", "docker rm d15rmf", "docker rm -f d15rmf", "docker rm d15rmf")
sc("rm -v", "docker create --name d15rv -v /anon $IMG", "docker volume ls -q | wc -l", "docker rm -v d15rv", "docker volume ls -q | wc -l")
sc("update", "docker run -d --name d15u -m 64m $IMG sleep 30", "docker update -m 128m --memory-swap 256m --cpus 0.5 --pids-limit 20 --restart on-failure:3 d15u",
   insp("d15u", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}}"), "docker exec d15u sh -c " + shlex.quote(cg("mem")))
sc("diff", "docker run --name d15df $IMG sh -c 'echo x > /home/new; rm /bin/true 2>/dev/null; mkdir -p /tmp/d; touch /tmp/d/f'", "docker diff d15df | sort")
sc("container prune", "docker create --name d15cp1 $IMG", "docker run -d --name d15cp2 $IMG sleep 30", "docker container prune -f | grep -c '^[0-9a-f]\\{64\\}'", "docker ps -a --format '{{.Names}}' | sort")
sc("stats", "docker run -d --name d15sx $IMG sleep 30", "docker stats --no-stream --format '{{.Name}} {{.PIDs}}' d15sx",
   "docker stats --no-stream --format '{{.MemUsage}}|{{.NetIO}}|{{.BlockIO}}' d15sx | sed 's/[0-9.]\\+[kMG]\\?i\\?B/N/g'")
sc("attach", "docker run -d --name d15at $IMG sh -c 'sleep 1; echo late'", "timeout 10 docker attach d15at")
sc("commit-free: export refused or works", "docker create --name d15ex $IMG", "docker export d15ex | tar -t | grep -c '^bin/'")

# ---- images -------------------------------------------------------------------
sc("images", "docker images --format '{{.Repository}}:{{.Tag}} {{.Size}}'", "docker image inspect --format '{{.Os}} {{.Architecture}} {{json .Config.Cmd}} {{.Config.WorkingDir}}' $IMG")
sc("tag/rmi", "docker tag $IMG d15img:t1", "docker images --format '{{.Repository}}:{{.Tag}}' d15img", "docker rmi d15img:t1", "docker rmi d15img:t1")
sc("history", "docker history --format '{{.CreatedBy}}' $IMG | wc -l")
sc("save/load", "docker tag $IMG d15sv:1", "docker save -o $TMPD/img.tar d15sv:1", "tar -tf $TMPD/img.tar | grep -c -e manifest.json -e repositories",
   "docker rmi d15sv:1", "docker load -i $TMPD/img.tar", "docker images --format '{{.Repository}}:{{.Tag}}' d15sv", "docker rmi d15sv:1")
sc("import --change", "scripts/mk-busybox-rootfs.sh $TMPD/rootfs >/dev/null 2>&1 && tar -C $TMPD/rootfs -cf $TMPD/fs.tar . && echo made",
   "docker import -c 'CMD [\"echo\",\"imported\"]' -c 'ENV IA=1' -c 'WORKDIR /tmp' -c 'USER 1' -c 'EXPOSE 81' -c 'ENTRYPOINT [\"/bin/sh\",\"-c\",\"exec \\\"$@\\\"\",\"--\"]' $TMPD/fs.tar d15imp:1",
   "docker run --rm d15imp:1", "docker run --rm d15imp:1 sh -c 'echo $IA; pwd; id -u'", "docker image inspect --format '{{json .Config.ExposedPorts}}' d15imp:1", "docker rmi d15imp:1")
sc("image prune", "docker image prune -f | tail -1 | sed 's/[0-9.]\\+[kMG]\\?B/N/'")

# ---- system -------------------------------------------------------------------
sc("info", "docker info --format '{{.Containers}} {{.ContainersRunning}} {{.Images}} {{gt .MemTotal 0}} {{.NCPU}} {{.OSType}} {{.Architecture}} {{.CgroupVersion}}'")
sc("info counts", "docker create --name d15ic $IMG", "docker info --format '{{.Containers}} {{.ContainersStopped}}'")
# The API versions differ by design (dockerd 20.10 speaks 1.41, cubby 1.43).
sc("version", "docker version --format '{{.Server.Os}} {{.Server.Arch}} {{.Client.Os}}'")
sc("system df", "docker system df --format '{{.Type}} {{.TotalCount}} {{.Active}}'", "docker system df -v --format '{{json .Images}}' | head -c 0; echo ok")
sc("system prune", "docker create --name d15sp $IMG", "docker network create d15n", "docker system prune -f | grep -c -e d15n -e '^[0-9a-f]\\{64\\}'", "docker ps -aq | wc -l")
sc("events --since", "docker run --name d15ev $IMG true", "docker rm d15ev",
   "docker events --since 30s --until $(( $(date +%s) + 1 )) --filter container=d15ev --format '{{.Type}} {{.Action}}'")
sc("events live", "(timeout 6 docker events --filter type=container --filter event=start --filter event=die --filter event=destroy --format '{{.Type}} {{.Action}} {{.Actor.Attributes.name}}' > $TMPD/ev &) ; sleep 1",
   "docker run --rm --name d15evl $IMG true", "sleep 6", "cat $TMPD/ev")
sc("events filter image", "docker run --name d15evi $IMG true", "docker events --since 30s --until $(( $(date +%s) + 1 )) --filter image=$IMG --filter container=d15evi --format '{{.Action}}' | sort -u")

# ---- volumes ------------------------------------------------------------------
sc("volume lifecycle", "docker volume create d15vol", "docker volume create --label k=v d15vol2", "docker volume ls --format '{{.Driver}} {{.Name}}' --filter name=d15vol",
   "docker volume inspect --format '{{.Name}} {{.Driver}} {{.Mountpoint}} {{json .Labels}}' d15vol2 | sed 's| /.*/d15vol2/_data| MP|'",
   "docker volume ls -q --filter label=k=v", "docker volume rm d15vol d15vol2", "docker volume rm d15vol")
sc("volume in use", "docker volume create d15vu", "docker create --name d15vuc -v d15vu:/x $IMG", "docker volume rm d15vu", "docker volume prune -f | tail -1")
# Anonymous volumes: API 1.41 (dockerd 20.10) prunes all unused volumes, 1.42+ only anonymous ones.
sc("volume prune", "docker create --name d15vpc -v /anon $IMG", "docker rm d15vpc", "docker volume ls -q | wc -l", "docker volume prune -f | grep -c '^[0-9a-f]\\{64\\}'", "docker volume ls -q | wc -l")

# ---- networks -----------------------------------------------------------------
# The reference runs with --bridge=none: no default bridge to compare.
sc("network ls", "docker network ls --format '{{.Name}} {{.Driver}} {{.Scope}}' | grep -v '^bridge ' | sort")
sc("network lifecycle", "docker network create --subnet 10.253.16.0/24 --label k=v d15net", "docker network inspect --format '{{.Name}} {{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}} {{json .Labels}} {{.Internal}}' d15net",
   "docker network ls --filter name=d15net --format '{{.Name}}'", "docker network create d15net", "docker network rm d15net", "docker network rm d15net")
sc("network connect", "docker network create d15n", "docker run -d --name d15nc --network none $IMG sleep 30", "docker network connect d15n d15nc",
   "docker exec d15nc ls /sys/class/net", "docker network disconnect d15n d15nc", "docker exec d15nc ls /sys/class/net", "docker network rm d15n")
sc("network internal", "docker network create --internal d15ni", insp("d15ni", "{{.Internal}}"))
sc("network prune", "docker network create d15np", "docker network prune -f", "docker network ls -q --filter name=d15np | wc -l")


# ---- docker-py ------------------------------------------------------------------
def py_scenarios():
    import docker

    out = []

    def p(name):
        def deco(f):
            out.append(("py:" + name, f))
            return f
        return deco

    @p("containers.run output")
    def _(c, img, tmpd):
        return c.containers.run(img, ["sh", "-c", "echo hi; echo $E"], environment={"E": "v"}, remove=True).decode()

    @p("containers.run kwargs")
    def _(c, img, tmpd):
        return c.containers.run(img, ["sh", "-c", "id -u; pwd; hostname; ulimit -n"], user="1", working_dir="/tmp", hostname="pyh",
                                ulimits=[docker.types.Ulimit(name="nofile", soft=300, hard=300)], remove=True).decode()

    @p("containers.run error")
    def _(c, img, tmpd):
        try:
            c.containers.run(img, ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
        except docker.errors.ContainerError as e:
            return f"ContainerError {e.exit_status} {e.stderr!r}"
        return "no error"

    @p("container lifecycle")
    def _(c, img, tmpd):
        ct = c.containers.run(img, ["sleep", "30"], detach=True, name="d15py", labels={"a": "b"}, ports={"8080/tcp": None})
        ct.reload()
        r = [ct.name, ct.status, json.dumps(ct.labels), json.dumps(sorted(ct.attrs["Config"]["ExposedPorts"]))]
        r.append(str(ct.exec_run("echo ex").output))
        r.append(str(ct.exec_run(["sh", "-c", "exit 2"]).exit_code))
        ct.stop(timeout=1)
        r.append(str(ct.wait()["StatusCode"]))
        ct.remove()
        return "\n".join(r)

    @p("logs/archive")
    def _(c, img, tmpd):
        ct = c.containers.run(img, ["sh", "-c", "echo l1; echo l2 > /tmp/f"], detach=True, name="d15pyl")
        ct.wait()
        r = [ct.logs().decode()]
        bits, stat = ct.get_archive("/tmp/f")
        r.append(f"{stat['name']} {stat['size']}")
        import io, tarfile
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            data = b"put\n"
            ti = tarfile.TarInfo("p.txt")
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        r.append(str(ct.put_archive("/tmp", buf.getvalue())))
        return "\n".join(r)

    @p("stats")
    def _(c, img, tmpd):
        ct = c.containers.run(img, ["sleep", "30"], detach=True, name="d15pys")
        s = ct.stats(stream=False)
        keys = sorted(k for k in s if k not in ("id", "name"))
        return " ".join(keys) + f"\nmem>0:{s['memory_stats'].get('usage', 0) > 0} limit>0:{s['memory_stats'].get('limit', 0) > 0}"

    @p("volumes/networks")
    def _(c, img, tmpd):
        v = c.volumes.create("d15pyv", labels={"x": "1"})
        n = c.networks.create("d15pyn", driver="bridge")
        r = [v.name, json.dumps(v.attrs.get("Labels")), n.name, n.attrs["Driver"]]
        ct = c.containers.create(img, ["true"], name="d15pyc")
        n.connect(ct)
        n.reload()
        r.append(str(len(n.attrs.get("Containers") or {})))
        ct.remove()
        n.remove()
        v.remove()
        return "\n".join(r)

    @p("null fields (DockerSpawner body)")
    def _(c, img, tmpd):
        body = {"Image": img, "Cmd": ["true"], "ExposedPorts": {"8888/tcp": None}, "Env": None, "Labels": None, "Volumes": None,
                "HostConfig": {"Binds": None, "PortBindings": {"8888/tcp": None}, "Memory": None, "Links": None, "RestartPolicy": None},
                "NetworkingConfig": None}
        r = c.api._post_json(c.api._url("/containers/create"), data=body, params={"name": "d15null"})
        res = [str(r.status_code)]
        if r.ok:
            i = c.api.inspect_container("d15null")
            res.append(json.dumps(sorted(i["Config"]["ExposedPorts"] or {})))
        return "\n".join(res)

    @p("info/version")
    def _(c, img, tmpd):
        i = c.info()
        v = c.version()
        return f"{i['OSType']} {i['MemTotal'] > 0} {i['NCPU']} {v['ApiVersion'] >= '1.41'} {sorted(k for k in v if k in ('Os','Arch','Version','ApiVersion'))}"

    @p("events")
    def _(c, img, tmpd):
        since = int(time.time()) - 1
        c.containers.run(img, ["true"], name="d15pye", remove=True)
        ev = c.events(since=since, until=int(time.time()) + 1, decode=True, filters={"container": "d15pye"})
        return " ".join(e.get("Action", "") for e in ev if e.get("Type") == "container")

    @p("images api")
    def _(c, img, tmpd):
        i = c.images.get(img)
        return f"{i.tags} {len(i.id)} {i.attrs['Os']} {json.dumps(i.attrs['Config'].get('Cmd'))}"

    return out


# ---- runner ---------------------------------------------------------------------
def normalise(text, ctx):
    t = text.replace("\r\n", "\n")
    t = t.replace(ctx["tmpd"], "<TMP>").replace(ctx["registry"], "<REG>")
    t = re.sub(r"sha256:[0-9a-f]{64}", "<DIGEST>", t)
    t = re.sub(r"\b[0-9a-f]{64}\b", "<ID>", t)
    t = re.sub(r"\b[0-9a-f]{12}\b", "<SID>", t)
    t = re.sub(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d+)?( ?(Z|[+-]\d\d:?\d\d)( [A-Z]+)?)?", "<TIME>", t)
    t = re.sub(r"(About an?|Less than an?|\d+) (second|minute|hour|day|week|month|year)s?", "<DUR>", t)
    t = re.sub(r"\b\d+(\.\d+)?(B|kB|KB|MB|GB|KiB|MiB|GiB)\b", "<SIZE>", t)
    t = re.sub(r"\b(10|172|192)\.\d+\.\d+\.\d+(/\d+)?", "<IP>", t)
    return t


def shell(ctx, cmd):
    env = dict(os.environ, DOCKER_HOST=ctx["host"], IMG=ctx["image"], TMPD=ctx["tmpd"], DOCKER_CLI_HINTS="false",
               DOCKER_CONFIG=ctx["tmpd"] + "/.docker")
    env.pop("DOCKER_API_VERSION", None)
    try:
        p = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        out, err, rc = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired:
        out, err, rc = "", "", "timeout"
    s = f"$ {cmd}\n{out}"
    if err:
        s += "".join(f"[stderr] {line}\n" for line in err.rstrip("\n").split("\n"))
    return s + f"[exit {rc}]\n"


def cleanup(ctx):
    for q, rm in [("docker ps -aq", "docker rm -f -v"), ("docker network ls -q --filter name=d15", "docker network rm"),
                  ("docker volume ls -q", "docker volume rm -f")]:
        shell(ctx, f"ids=$({q}); [ -z \"$ids\" ] || {rm} $ids")
    shell(ctx, "docker images --format '{{.Repository}}:{{.Tag}}' | grep '^d15' | xargs -r docker rmi -f")


def run_side(ctx, selected, pys, results):
    import docker
    client = docker.DockerClient(base_url=ctx["host"], version="1.41", timeout=60)
    for name, steps in selected:
        os.makedirs(ctx["tmpd"], exist_ok=True)
        results[name] = "".join(shell(ctx, s) for s in steps)
        cleanup(ctx)
    for name, f in pys:
        try:
            r = f(client, ctx["image"], ctx["tmpd"])
        except Exception as e:  # what a user of docker-py sees
            r = f"{type(e).__name__}: {e}"
        results[name] = r + "\n"
        cleanup(ctx)


def main():
    ap = argparse.ArgumentParser()
    for a in ("--ref", "--cubby", "--image", "--registry", "--tmp", "--out"):
        ap.add_argument(a, required=True)
    ap.add_argument("-k", default="")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    selected = [s for s in SCENARIOS if a.k in s[0]]
    pys = [s for s in py_scenarios() if a.k in s[0]]
    sides = {}
    threads = []
    for side, host in (("ref", a.ref), ("cubby", a.cubby)):
        ctx = {"host": host, "image": a.image, "registry": a.registry, "tmpd": f"{a.tmp}/work-{side}"}
        res = {}
        sides[side] = (ctx, res)
        t = threading.Thread(target=run_side, args=(ctx, selected, pys, res))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    names = [s[0] for s in selected] + [s[0] for s in pys]
    matched = 0
    report = []
    summary = []
    for n in names:
        # Temp dirs differ per side only by their name: one placeholder.
        r = normalise(sides["ref"][1].get(n, "missing\n"), sides["ref"][0])
        c = normalise(sides["cubby"][1].get(n, "missing\n"), sides["cubby"][0])
        ok = r == c
        matched += ok
        summary.append(f"{'MATCH' if ok else 'DIFF '} {n}")
        report.append(f"==== {'MATCH' if ok else 'DIFF'} {n}\n")
        if ok:
            report.append(r)
        else:
            report.extend(difflib.unified_diff(r.splitlines(True), c.splitlines(True), "dockerd", "cubby"))
        report.append("\n")
    total = len(names)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "report.txt"), "w") as f:
        f.writelines(report)
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write("\n".join(summary) + f"\nmatched {matched}/{total}\n")
    print("\n".join(summary))
    print(f"matched {matched}/{total} (details: {a.out}/report.txt)")


if __name__ == "__main__":
    sys.exit(main())
