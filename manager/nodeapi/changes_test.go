package nodeapi

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/runtime/image"
)

func TestParseChanges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes []string
		want    image.Config
	}{
		{"none", nil, image.Config{}},
		{"cmd json", []string{`CMD ["/bin/helper","sleep","inf"]`}, image.Config{Cmd: []string{"/bin/helper", "sleep", "inf"}}},
		{"cmd shell", []string{`CMD helper sleep inf`}, image.Config{Cmd: []string{"/bin/sh", "-c", "helper sleep inf"}}},
		{"bad json falls back to shell", []string{`CMD [oops`}, image.Config{Cmd: []string{"/bin/sh", "-c", "[oops"}}},
		{"lowercase instruction and tabs", []string{"entrypoint\t[\"/app\"]"}, image.Config{Entrypoint: []string{"/app"}}},
		{"empty exec form", []string{`CMD []`}, image.Config{Cmd: []string{}}},
		{"env pairs with quotes", []string{`ENV A=1 B="two words" C='$x' D=a\ b`},
			image.Config{Env: []string{"A=1", "B=two words", "C=$x", "D=a b"}}},
		{"env legacy form", []string{`ENV GREETING hello   big world`}, image.Config{Env: []string{"GREETING=hello   big world"}}},
		{"env replaces", []string{`ENV A=1 B=2`, `ENV A=3`}, image.Config{Env: []string{"A=3", "B=2"}}},
		{"label", []string{`LABEL com.example.a=b "with space"=x`, `LABEL legacy value here`},
			image.Config{Labels: map[string]string{"com.example.a": "b", "with space": "x", "legacy": "value here"}}},
		{"expose", []string{`EXPOSE 80 53/udp 8000-8001`, `EXPOSE 80/tcp`},
			image.Config{ExposedPorts: []string{"80/tcp", "53/udp", "8000/tcp", "8001/tcp"}}},
		{"workdir relative continues", []string{`WORKDIR /srv`, `WORKDIR app/../data`}, image.Config{WorkingDir: "/srv/data"}},
		{"workdir relative from root", []string{`WORKDIR data`}, image.Config{WorkingDir: "/data"}},
		{"user and stopsignal", []string{`USER app:staff`, `STOPSIGNAL SIGINT`}, image.Config{User: "app:staff", StopSignal: "SIGINT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseChanges(tc.changes)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got  %#v\nwant %#v", *got, tc.want)
			}
		})
	}
}

func TestParseChangesErrors(t *testing.T) {
	for _, tc := range []struct {
		change string
		want   string
	}{
		{`VOLUME /data`, `invalid change "VOLUME /data": VOLUME is not a valid change command; accepted: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, WORKDIR`},
		{`RUN true`, `RUN is not a valid change command`},
		{`  `, `empty change`},
		{`CMD`, `CMD requires at least one argument`},
		{`ENV`, `ENV requires at least one argument`},
		{`ENV A`, `ENV must have two arguments`},
		{`ENV A=1 B`, `ENV names must be followed by =value: "B"`},
		{`ENV ="x"`, `ENV names can not be blank`},
		{`LABEL a="open`, `unmatched " quote`},
		{`EXPOSE http`, `EXPOSE http: invalid port`},
		{`EXPOSE 0`, `invalid port`},
		{`EXPOSE 9-8`, `invalid port`},
		{`EXPOSE 80/icmp`, `invalid protocol "icmp"`},
		{`USER a b`, `USER requires exactly one argument`},
		{`WORKDIR`, `WORKDIR requires exactly one argument`},
		{`STOPSIGNAL SIGNOPE`, `STOPSIGNAL: invalid signal "SIGNOPE"`},
	} {
		_, err := parseChanges([]string{`CMD ["ok"]`, tc.change})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.change, err, tc.want)
			continue
		}
		if !errors.Is(err, errInvalid) {
			t.Errorf("%q: %v is not classified invalid", tc.change, err)
		}
	}
}
