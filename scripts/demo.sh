#!/usr/bin/env bash
# make demo: a one-node shoal swarm serving the getstartedlab stack.
#
# It builds the demo web service (examples/getstartedlab/app) into an
# image, starts a one-node swarm in a temporary data dir, deploys the seed
# stack and shows its tasks. It leaves the swarm running and says how to
# tear it down.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
bin=$top/bin

work=$(mktemp -d /tmp/shoal-demo.XXXXXX)
run=/run/shoal-demo
data=$work/data
export SHOAL_HOST=unix://$run/shoal.sock
shoal() { "$bin/shoal" "$@"; }

if [ -S "$run/shoal.sock" ] && shoal node ls >/dev/null 2>&1; then
  echo "A demo swarm is already running ($SHOAL_HOST). Tear it down first:"
  echo "  SHOAL_HOST=$SHOAL_HOST $bin/shoal swarm leave --force"
  exit 1
fi

echo "== building the demo image (a static Go web server: hostname and a visit counter)"
mkdir -p "$work/rootfs/etc" "$work/rootfs/tmp"
CGO_ENABLED=0 go build -trimpath -o "$work/rootfs/app" ./examples/getstartedlab/app
printf 'root:x:0:0:root:/root:/app\nnobody:x:65534:65534:nobody:/:/app\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"
tar -C "$work/rootfs" -cf "$work/web.tar" .

echo "== shoal swarm init"
shoal swarm init --data-dir "$data" --run-dir "$run" --listen-addr 127.0.0.1:2377 --advertise-addr 127.0.0.1:2377

echo "== shoal image import"
shoal image import --change 'CMD ["/app"]' --change 'EXPOSE 80' "$work/web.tar" getstartedlab/web:demo
shoal image ls

echo "== shoal stack deploy -c examples/getstartedlab/docker-compose.yml getstartedlab"
shoal stack deploy --detach=false -c examples/getstartedlab/docker-compose.yml getstartedlab

echo "== shoal service ps getstartedlab_web"
shoal service ps getstartedlab_web
echo
shoal service ls

echo
echo "== 10 requests to localhost:4000 (the ingress spreads them over the tasks)"
get() {
  if command -v curl >/dev/null; then curl -s -m 2 http://127.0.0.1:4000/
  else exec 3<>/dev/tcp/127.0.0.1/4000 && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && cat <&3; exec 3<&-; fi
}
for i in $(seq 50); do get >/dev/null 2>&1 && break; sleep 0.1; done
: > "$work/answers"
for i in $(seq 10); do get | grep Hostname | tee -a "$work/answers"; done
echo "answered by $(sort -u "$work/answers" | wc -l) different tasks"

cat <<EOF2

The swarm keeps running. Try:
  export SHOAL_HOST=$SHOAL_HOST
  $bin/shoal service ps getstartedlab_web
  $bin/shoal service scale getstartedlab_web=8
  $bin/shoal container ls
Tear it down (removes every container, cgroup and file it made):
  $bin/shoal stack rm getstartedlab
  $bin/shoal swarm leave --force && rm -rf $work
EOF2
