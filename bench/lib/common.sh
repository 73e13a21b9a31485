# Shell helpers shared by bench/run.sh and bench/profile.sh (sourced): ports,
# and the nginx configuration both use, so the origin is the same in both.

# wait_port PORT SECONDS [PID]: until something accepts on 127.0.0.1:PORT; fails
# early if PID has exited.
wait_port() {
    local port=$1 secs=$2 pid=${3:-} n
    for n in $(seq 1 $(( secs * 10 ))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# free_ports N: N free loopback ports, space-separated.
free_ports() {
    "${PY:-python3}" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# nginx runs its workers as root only when told to (the pages live under /tmp).
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root;"

nginx_common() {  # $1 = prefix directory
    mkdir -p "$1/tmp"
    cat <<EOF
$USER_LINE
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 20000;
events { worker_connections 20000; multi_accept on; }
EOF
}
nginx_http_common() {
    cat <<EOF
    access_log off;
    types { text/html html; }
    default_type application/octet-stream;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    # No limit on requests per keep-alive connection, like hyper.
    keepalive_requests 1000000;
    keepalive_timeout 120s;
EOF
}

# nginx_origin_conf DIR PORT WWW: the origin serving the bench pages (and
# their .gz beside them), one worker.
nginx_origin_conf() {
    local dir=$1 port=$2 www=$3
    nginx_common "$dir"
    echo "http {"
    nginx_http_common
    cat <<EOF
    sendfile on;
    tcp_nopush on;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $www;
        gzip_static on;
        gzip on;  # text/html is always among gzip_types
        location / { }
    }
}
EOF
}

# bench_routes ORIGIN_PORT: the proxy's two benchmark routes to the nginx
# origin, one with injection and one without (the hop alone), so that the
# profiles and the benchmark run the same routes.
bench_routes() {
    cat <<EOF2
[[routes]]
name = "inject"
hosts = ["inject.bench"]
upstream = "http://127.0.0.1:$1"
inject = true

[[routes]]
name = "plain"
hosts = ["plain.bench"]
upstream = "http://127.0.0.1:$1"
inject = false
EOF2
}
