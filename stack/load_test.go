package stack

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"google.golang.org/protobuf/proto"
)

// writeFiles writes name → content into a fresh directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// loadErr loads files of dir and returns the error with dir left out, so
// that messages read as the user sees them ("docker-compose.yml: …").
func loadErr(t *testing.T, dir string, opts Options) string {
	t.Helper()
	_, _, err := Load("st", opts)
	if err == nil {
		t.Fatal("Load succeeded, want an error")
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %q does not match ErrInvalid", err)
	}
	return strings.ReplaceAll(err.Error(), dir+string(filepath.Separator), "")
}

func inDir(dir string, names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, filepath.Join(dir, n))
	}
	return out
}

func TestOverrideFiles(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"docker-compose.yml": `
services:
  web:
    image: example/web:1
    environment: [A=1, B=base]
    ports: ["80:80"]
    deploy:
      replicas: 2
      resources:
        limits: {memory: 64M}
`,
		"prod.yml": `
services:
  web:
    image: example/web:${TAG:-2}
    environment: {B: prod}
    deploy:
      replicas: 5
  worker:
    image: example/worker
`,
	})
	spec, _, err := Load("st", Options{Files: inDir(dir, "docker-compose.yml", "prod.yml")})
	if err != nil {
		t.Fatal(err)
	}
	equalSlice(t, "services", serviceNames(spec), []string{"st_web", "st_worker"})
	web := service(t, spec, "st_web")
	equal(t, "image", web.Task.Container.Image, "example/web:2")
	equal(t, "replicas", replicas(t, web), 5)
	equalSlice(t, "env", web.Task.Container.Env, []string{"A=1", "B=prod"})
	equal(t, "memory kept from the base file", web.Task.Resources.Limits.MemoryBytes, 64<<20)
	equal(t, "ports", len(web.Endpoint.Ports), 1)
}

func TestErrorNamesTheFileThatSetTheKey(t *testing.T) {
	base := `
services:
  web:
    image: example/web
    deploy:
      mode: glob
`
	tests := []struct {
		name, override, want string
	}{
		{"error in base", `
services:
  web:
    deploy:
      replicas: 3
`, `docker-compose.yml: services.web.deploy.mode: "glob" is not one of replicated, global`},
		{"override sets the bad value", `
services:
  web:
    deploy:
      mode: global
      replicas: 3
`, `override.yml: services.web.deploy.replicas: replicas can only be used with replicated mode`},
		{"bad size in override", `
services:
  web:
    deploy:
      mode: replicated
      resources:
        limits: {memory: 50X}
`, `override.yml: services.web.deploy.resources.limits.memory: invalid size "50X"`},
		{"missing variable in override", `
services:
  web:
    image: ${IMAGE?set IMAGE to the image to run}
`, `override.yml: services.web.image: required variable IMAGE is missing a value: set IMAGE to the image to run`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"docker-compose.yml": base, "override.yml": tt.override})
			got := loadErr(t, dir, Options{Files: inDir(dir, "docker-compose.yml", "override.yml")})
			equal(t, "error", got, tt.want)
		})
	}
}

func TestStdin(t *testing.T) {
	dir := writeFiles(t, map[string]string{"key.txt": "k3y"})
	yml := `
services:
  web:
    image: example/web
    secrets: [key]
secrets:
  key:
    file: ./key.txt
`
	spec, _, err := Load("st", Options{Files: []string{"-"}, Stdin: strings.NewReader(yml), WorkingDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "secret data", string(spec.Secrets[0].Data), "k3y")

	_, _, err = Load("st", Options{Files: []string{"-"}, Stdin: strings.NewReader("services:\n  web:\n    image: x\n    deploy: {mode: glob}\n"), WorkingDir: dir})
	if err == nil || err.Error() != `<stdin>: services.web.deploy.mode: "glob" is not one of replicated, global` {
		t.Errorf("error = %v", err)
	}
	_, _, err = Load("st", Options{Files: []string{"-", "-"}, Stdin: strings.NewReader(yml)})
	if err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("stdin twice: error = %v", err)
	}
	_, _, err = Load("st", Options{Files: []string{"-"}})
	if err == nil {
		t.Error("stdin without a reader: no error")
	}
}

func TestInterpolation(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		".env": "FROM_DOTENV=dotenv\nBOTH=dotenv\nNESTED=${OUTER}/x\nTAG=dotenv\n",
		"docker-compose.yml": `
services:
  web:
    image: "example/web:${TAG}"
    environment:
      - FROM_DOTENV=${FROM_DOTENV}
      - BOTH=${BOTH}
      - DEFAULT=${UNSET:-fallback}
      - EMPTY_DEFAULT=${EMPTY:-fallback}
      - DASH_DEFAULT=${EMPTY-kept-empty}
      - NESTED=${NESTED}
      - LITERAL=$$NOT_INTERPOLATED
      - PASSED_THROUGH
      - MISSING=${MISSING}
`,
	})
	env := map[string]string{"BOTH": "env", "EMPTY": "", "OUTER": "/outer", "TAG": "env", "PASSED_THROUGH": "yes"}
	spec, warnings, err := Load("st", Options{Files: inDir(dir, "docker-compose.yml"), Env: env})
	if err != nil {
		t.Fatal(err)
	}
	// compose-go would log this through logrus, twice (once per pass).
	equalSlice(t, "warnings", warnings, []string{`The "MISSING" variable is not set. Defaulting to a blank string.`})
	web := service(t, spec, "st_web")
	equal(t, "image (Env wins over .env)", web.Task.Container.Image, "example/web:env")
	equalSlice(t, "env", web.Task.Container.Env, []string{
		"BOTH=env",
		"DASH_DEFAULT=",
		"DEFAULT=fallback",
		"EMPTY_DEFAULT=fallback",
		"FROM_DOTENV=dotenv",
		"LITERAL=$NOT_INTERPOLATED",
		"MISSING=",
		"NESTED=/outer/x",
		"PASSED_THROUGH=yes",
	})
}

func TestRequiredVariable(t *testing.T) {
	dir := writeFiles(t, map[string]string{"docker-compose.yml": `
services:
  web:
    image: example/web
    environment:
      TOKEN: ${TOKEN?TOKEN must be set}
`})
	got := loadErr(t, dir, Options{Files: inDir(dir, "docker-compose.yml")})
	equal(t, "error", got, "docker-compose.yml: services.web.environment.TOKEN: required variable TOKEN is missing a value: TOKEN must be set")

	if _, _, err := Load("st", Options{Files: inDir(dir, "docker-compose.yml"), Env: map[string]string{"TOKEN": "t"}}); err != nil {
		t.Errorf("with TOKEN set: %v", err)
	}
}

func TestErrors(t *testing.T) {
	const head = "services:\n  web:\n    image: example/web\n"
	tests := []struct {
		name, yml, want string
	}{
		{"invalid memory", head + "    deploy:\n      resources:\n        limits:\n          memory: 50X\n",
			`docker-compose.yml: services.web.deploy.resources.limits.memory: invalid size "50X"`},
		{"invalid cpus", head + "    deploy:\n      resources:\n        reservations:\n          cpus: lots\n",
			`docker-compose.yml: services.web.deploy.resources.reservations.cpus: invalid number of CPUs "lots"`},
		{"bad mode", head + "    deploy:\n      mode: glob\n",
			`docker-compose.yml: services.web.deploy.mode: "glob" is not one of replicated, global`},
		{"bad port", head + "    ports: ['abc:80']\n",
			`docker-compose.yml: services.web.ports: invalid port "abc:80": invalid hostPort: abc`},
		{"bad published port", head + "    ports:\n      - target: 80\n        published: 8000-8001\n",
			`docker-compose.yml: services.web.ports: invalid published port "8000-8001": ranges are only supported in the short syntax`},
		{"unknown top-level key", head + "servics:\n  db:\n    image: x\n",
			`docker-compose.yml: servics: unknown key`},
		{"unknown service key", head + "    imagee: x\n",
			`docker-compose.yml: services.web.imagee: unknown key`},
		{"forbidden key", head + "    mem_limit: 1g\n",
			`docker-compose.yml: services.web.mem_limit: not supported by stack deploy: set resource limits using deploy.resources`},
		{"forbidden key in a service named x-…", "services:\n  x-ray:\n    image: x\n    mem_limit: 1g\n",
			`docker-compose.yml: services.x-ray.mem_limit: not supported by stack deploy: set resource limits using deploy.resources`},
		{"forbidden key outside the schema", head + "    volume_driver: nfs\n",
			"docker-compose.yml: services.web.volume_driver: not supported by stack deploy: instead of setting the volume driver on the service, define a volume using the top-level `volumes` option and specify the driver there"},
		{"extends", head + "    extends: {service: base}\n  base:\n    image: x\n",
			"docker-compose.yml: services.web.extends: not supported by stack deploy: support for `extends` is not implemented; merge files with several -c instead"},
		{"bad duration", head + "    stop_grace_period: 10q\n",
			`docker-compose.yml: services.web.stop_grace_period: invalid duration "10q"`},
		{"bad restart condition", head + "    deploy:\n      restart_policy:\n        condition: sometimes\n",
			`docker-compose.yml: services.web.deploy.restart_policy.condition: "sometimes" is not one of none, on-failure, any`},
		{"bad update order (schema)", head + "    deploy:\n      update_config:\n        order: random\n",
			`docker-compose.yml: services.web.deploy.update_config.order: value must be one of 'start-first', 'stop-first'`},
		{"bad rollback failure action", head + "    deploy:\n      rollback_config:\n        failure_action: rollback\n",
			`docker-compose.yml: services.web.deploy.rollback_config.failure_action: "rollback" is not one of pause, continue`},
		{"wrong type (schema)", head + "    deploy:\n      replicas: many\n",
			`docker-compose.yml: services.web.deploy.replicas: failed to cast to expected type: strconv.Atoi: parsing "many": invalid syntax`},
		{"undefined network", head + "    networks: [nowhere]\n",
			`docker-compose.yml: services.web.networks: undefined network "nowhere"`},
		{"undefined volume", head + "    volumes: ['data:/data']\n",
			`docker-compose.yml: services.web.volumes: undefined volume "data"`},
		{"undefined secret", head + "    secrets: [key]\n",
			`docker-compose.yml: services.web.secrets: undefined secret "key"`},
		{"missing secret file", head + "secrets:\n  key:\n    file: ./nope\n",
			`docker-compose.yml: secrets.key.file: open nope: no such file or directory`},
		{"no image", "services:\n  web:\n    command: [sleep, \"1\"]\n",
			`docker-compose.yml: services.web.image: no image given (stack deploy runs images and does not build them)`},
		{"global with replicas", head + "    deploy:\n      mode: global\n      replicas: 2\n",
			`docker-compose.yml: services.web.deploy.replicas: replicas can only be used with replicated mode`},
		{"dnsrr with ingress port", head + "    ports: ['80:80']\n    deploy:\n      endpoint_mode: dnsrr\n",
			`docker-compose.yml: services.web.ports: port 80 is published in ingress mode, which endpoint_mode dnsrr does not allow; publish it with mode: host`},
		{"bad endpoint mode", head + "    deploy:\n      endpoint_mode: round-robin\n",
			`docker-compose.yml: services.web.deploy.endpoint_mode: "round-robin" is not one of vip, dnsrr`},
		{"port published twice", head + "    ports: ['80:80', '80:81']\n",
			`docker-compose.yml: services.web.ports: port 80/tcp is published twice`},
		{"bad healthcheck", head + "    healthcheck:\n      test: [RUN, x]\n",
			`docker-compose.yml: services.web.healthcheck.test: must start with "CMD", "CMD-SHELL" or "NONE"`},
		{"bad network driver", head + "    networks: [n]\nnetworks:\n  n:\n    driver: macvlan\n",
			`docker-compose.yml: networks.n.driver: "macvlan" is not one of overlay, bridge`},
		{"mounted twice", head + "    volumes: ['/a:/x']\n    tmpfs: [/x]\n",
			`docker-compose.yml: services.web.volumes: /x is mounted twice`},
		{"bad log size", head + "    logging:\n      options:\n        max-size: huge\n",
			`docker-compose.yml: services.web.logging.options.max-size: invalid size "huge"`},
		{"yaml syntax", "services:\n  web:\n    image: x\n   bad: [\n",
			`docker-compose.yml: yaml: while parsing a block mapping at line 1, column 3: line 3, column 4: did not find expected key`},
		{"bad interpolation", "services:\n  web:\n    image: ${X\n",
			`docker-compose.yml: services.web.image: invalid interpolation format "${X" (write a literal $ as $$)`},
		{"jobs", head + "jobs:\n  migrate:\n    image: x\n",
			`docker-compose.yml: jobs: not supported by stack deploy: jobs are not swarm services`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"docker-compose.yml": tt.yml})
			got := loadErr(t, dir, Options{Files: inDir(dir, "docker-compose.yml")})
			equal(t, "error", got, tt.want)
		})
	}
}

func TestWarnings(t *testing.T) {
	dir := writeFiles(t, map[string]string{"docker-compose.yml": `
name: ignored
services:
  web:
    image: example/web
    build: .
    container_name: web
    links: [db]
    depends_on: [db]
    privileged: true
    expose: ["80"]
    ulimits:
      nofile: 1024
    ports:
      - "127.0.0.1:8080:80"
    logging:
      driver: syslog
    healthcheck:
      test: [CMD, "true"]
      start_interval: 1s
  db:
    image: example/db
    security_opt: [no-new-privileges]
    network_mode: "service:web"
    volumes: [data:/data]
    deploy:
      resources:
        reservations:
          devices:
            - capabilities: [gpu]
volumes:
  data:
    driver: nfs
networks:
  default:
    enable_ipv6: true
`})
	spec, warnings, err := Load("st", Options{Files: inDir(dir, "docker-compose.yml")})
	if err != nil {
		t.Fatal(err)
	}
	equalSlice(t, "warnings", warnings, []string{
		"Ignoring unsupported options: build, depends_on, deploy.resources.reservations.devices, healthcheck.start_interval, " +
			"links, logging.driver, name, network_mode, networks.default.enable_ipv6, privileged, security_opt, ulimits, volumes.data.driver",
		"Ignoring deprecated options: container_name (setting the container name is not supported), " +
			"expose (exposing ports is unnecessary: services on the same network can reach each other's containers on any port)",
		"Ignoring IP-address (127.0.0.1:8080) of services.web.ports: a service can only listen on 0.0.0.0",
	})
	// An ignored network_mode joins the default network, as in Docker.
	equalSlice(t, "db networks", targets(service(t, spec, "st_db").Task.Networks), []string{"st_default"})
	equal(t, "web published port", service(t, spec, "st_web").Endpoint.Ports[0].PublishedPort, 8080)
}

func TestProfiles(t *testing.T) {
	dir := writeFiles(t, map[string]string{"docker-compose.yml": `
services:
  web:
    image: example/web
  debug:
    image: example/debug
    profiles: [debug]
`})
	files := inDir(dir, "docker-compose.yml")
	spec, warnings, err := Load("st", Options{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	equalSlice(t, "services", serviceNames(spec), []string{"st_web"})
	equalSlice(t, "warnings", warnings, []string{"Skipping services whose profiles are not active: debug"})

	spec, warnings, err = Load("st", Options{Files: files, Env: map[string]string{"COMPOSE_PROFILES": "debug"}})
	if err != nil {
		t.Fatal(err)
	}
	equalSlice(t, "services", serviceNames(spec), []string{"st_debug", "st_web"})
	equalSlice(t, "warnings", warnings, nil)
}

func TestStackNames(t *testing.T) {
	for _, name := range []string{"a", "getstartedlab", "My.Stack-2_x", "9lives"} {
		if err := ValidateName(name); err != nil {
			t.Errorf("ValidateName(%q) = %v", name, err)
		}
	}
	for _, name := range []string{"", "-a", "_a", ".a", "a b", "a/b", "a:b", "émoji"} {
		if err := ValidateName(name); err == nil {
			t.Errorf("ValidateName(%q) succeeded", name)
		}
	}

	dir := writeFiles(t, map[string]string{"docker-compose.yml": `
services:
  web:
    image: example/web
    networks: [front]
networks:
  front:
`})
	// Upper case and dots are fine in a stack name though compose-go's
	// project names refuse them.
	spec, _, err := Load("My.Stack", Options{Files: inDir(dir, "docker-compose.yml")})
	if err != nil {
		t.Fatal(err)
	}
	equalSlice(t, "services", serviceNames(spec), []string{"My.Stack_web"})
	equalSlice(t, "networks", networkNames(spec), []string{"My.Stack_front"})

	if _, _, err := Load("bad name", Options{Files: inDir(dir, "docker-compose.yml")}); err == nil ||
		!strings.Contains(err.Error(), `invalid stack name "bad name"`) {
		t.Errorf("bad stack name: error = %v", err)
	}
}

func TestDeterminism(t *testing.T) {
	opts := Options{Files: []string{filepath.Join("testdata", "full.yml")}, Env: fullEnv}
	first, firstWarnings, err := Load("full", opts)
	if err != nil {
		t.Fatal(err)
	}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	// Map iteration order changes from run to run; enough runs would show
	// it leaking into the order of any list.
	for range 20 {
		spec, warnings, err := Load("full", opts)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(first, spec) {
			t.Fatal("a second conversion of the same files differs")
		}
		got, _ := proto.MarshalOptions{Deterministic: true}.Marshal(spec)
		if string(got) != string(want) {
			t.Fatal("a second conversion encodes differently")
		}
		equalSlice(t, "warnings", warnings, firstWarnings)
	}
}

// TestConvert drives Convert with a project compose-go loaded its own way,
// as another caller would.
func TestConvert(t *testing.T) {
	dir := writeFiles(t, map[string]string{"docker-compose.yml": `
services:
  web:
    image: example/web
    build: .
    secrets: [key]
    deploy:
      resources:
        limits: {cpus: "1.5", memory: 1G}
secrets:
  key:
    file: ./key.txt
`})
	po, err := cli.NewProjectOptions(inDir(dir, "docker-compose.yml"), cli.WithName("myproject"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := po.LoadProject(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var read []string
	readFile := func(path string) ([]byte, error) {
		read = append(read, path)
		return []byte("from-reader"), nil
	}
	spec, warnings, err := Convert("st", p, readFile)
	if err != nil {
		t.Fatal(err)
	}
	again, _, err := Convert("st", p, readFile)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(spec, again) {
		t.Error("converting the same project twice differs")
	}
	equalSlice(t, "files read", read, []string{filepath.Join(dir, "key.txt"), filepath.Join(dir, "key.txt")})
	equalSlice(t, "warnings", warnings, []string{"Ignoring unsupported options: build"})
	equal(t, "secret name (implicit names follow the stack, not the project)", spec.Secrets[0].Annotations.Name, "st_key")
	equal(t, "secret data", string(spec.Secrets[0].Data), "from-reader")
	web := service(t, spec, "st_web")
	equal(t, "nano cpus", web.Task.Resources.Limits.NanoCpus, 1500000000)
	equal(t, "memory", web.Task.Resources.Limits.MemoryBytes, 1<<30)

	p.Services["web"].Deploy.Mode = "glob"
	_, _, err = Convert("st", p, readFile)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v, want *Error", err)
	}
	equal(t, "error file", e.File, filepath.Join(dir, "docker-compose.yml"))
	equal(t, "error key", e.Key, "services.web.deploy.mode")
}

func TestNanoCPUs(t *testing.T) {
	for _, tt := range []struct {
		in   float32
		want int64
	}{{0.1, 1e8}, {0.25, 2.5e8}, {1, 1e9}, {1.5, 1.5e9}, {0.001, 1e6}, {16, 16e9}} {
		got, err := nanoCPUs(types.NanoCPUs(tt.in))
		if err != nil || got != tt.want {
			t.Errorf("nanoCPUs(%v) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	if _, err := nanoCPUs(types.NanoCPUs(-1)); err == nil {
		t.Error("negative cpus accepted")
	}
}
