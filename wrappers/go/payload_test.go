package extjob

import (
	"errors"
	"strings"
	"testing"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// ENV-2, PAY-6: fields the payload lacks come from EXTJOB_*, then
// DONKEYLABS_*; what is still missing is named in a one-line error.
func TestEnv2Pay6PayloadFallsBackToTheEnvironment(t *testing.T) {
	tests := []struct {
		name     string
		stdin    string
		env      map[string]string
		want     string // jobId name socketPath data, or the error's field
		wantErr  bool
		errField string
	}{
		{name: "stdin only", stdin: `{"jobId":"a","name":"n","data":1,"socketPath":"/s"}` + "\n",
			want: "a n /s 1"},
		{name: "CRLF and trailing lines ignored", stdin: "{\"jobId\":\"a\",\"name\":\"n\",\"data\":1,\"socketPath\":\"/s\"}\r\nrest",
			want: "a n /s 1"},
		{name: "empty stdin, EXTJOB_*", env: map[string]string{"EXTJOB_JOB_ID": "e", "EXTJOB_JOB_NAME": "n", "EXTJOB_SOCKET_PATH": "/e"},
			want: "e n /e {}"},
		{name: "EXTJOB_* wins over DONKEYLABS_*",
			env:  map[string]string{"EXTJOB_JOB_ID": "e", "DONKEYLABS_JOB_ID": "d", "DONKEYLABS_JOB_NAME": "n", "DONKEYLABS_SOCKET_PATH": "/d"},
			want: "e n /d {}"},
		{name: "an empty variable does not win",
			env:  map[string]string{"EXTJOB_JOB_ID": "", "DONKEYLABS_JOB_ID": "d", "DONKEYLABS_JOB_NAME": "n", "DONKEYLABS_TCP_PORT": "4000"},
			want: "d n tcp://127.0.0.1:4000 {}"},
		{name: "payload fields win, data kept", stdin: `{"jobId":"p","data":{"x":1}}`,
			env:  map[string]string{"EXTJOB_JOB_ID": "e", "EXTJOB_JOB_NAME": "n", "EXTJOB_SOCKET_PATH": "tcp://[::1]:9"},
			want: `p n tcp://[::1]:9 {"x":1}`},
		{name: "nothing at all", wantErr: true, errField: "jobId"},
		{name: "no socket anywhere", stdin: `{"jobId":"a","name":"n","data":1}`, wantErr: true, errField: "socketPath"},
		{name: "not JSON", stdin: `{"jobId":`, wantErr: true, errField: "not valid JSON"},
		{name: "not an object", stdin: `"job"`, wantErr: true, errField: "not a JSON object"},
		{name: "jobId a number", stdin: `{"jobId":1,"name":"n","data":1,"socketPath":"/s"}`, wantErr: true, errField: "jobId"},
		{name: "bad tcp address", stdin: `{"jobId":"a","name":"n","data":1,"socketPath":"tcp://nohost"}`, wantErr: true, errField: "socketPath"},
		{name: "bad tcp port", stdin: `{"jobId":"a","name":"n","data":1,"socketPath":"tcp://h:99999"}`, wantErr: true, errField: "socketPath"},
		{name: "protocolVersion 2", stdin: `{"jobId":"a","name":"n","data":1,"socketPath":"/s","protocolVersion":2}`, wantErr: true, errField: "protocolVersion"},
		{name: "features not strings", stdin: `{"jobId":"a","name":"n","data":1,"socketPath":"/s","protocolVersion":1,"features":[1]}`, wantErr: true, errField: "features"},
		{name: "token too short", stdin: `{"jobId":"a","name":"n","data":1,"socketPath":"/s","protocolVersion":1,"features":[],"token":"x"}`, wantErr: true, errField: "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ReadPayload(strings.NewReader(tt.stdin), env(tt.env))
			if tt.wantErr {
				var perr *ProtocolError
				if !errors.As(err, &perr) || !strings.Contains(err.Error(), tt.errField) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("got %v, want a one-line ProtocolError naming %s", err, tt.errField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join([]string{p.JobID, p.Name, p.SocketPath, string(p.Data)}, " "); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// PAY-3: the extension fields, and the defaults of section 12 without them.
func TestPay3Neg1PayloadExtensionsAndDefaults(t *testing.T) {
	v1, err := ParsePayload([]byte(`{"jobId":"a","name":"n","data":null,"socketPath":"/s"}`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if v1.HeartbeatIntervalMs != 5000 || v1.ReconnectWindowMs != 60000 || v1.MaxLineBytes != 16<<20 || v1.Attempt != 1 || v1.Checkpoint != nil {
		t.Fatalf("v1 defaults: %+v", v1)
	}
	if f := negotiate(v1); f.auth || f.names != nil {
		t.Fatalf("a v1 payload negotiated %+v (NEG-3)", f)
	}
	ext, err := ParsePayload([]byte(`{"jobId":"a","name":"n","data":null,"socketPath":"/s","protocolVersion":1,
		"features":["auth","replay","teleport"],"token":"`+testToken+`","heartbeatIntervalMs":100,"reconnectWindowMs":0,
		"attempt":2,"maxAttempts":3,"spoolPath":"/sp","checkpoint":{"step":3}}`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if ext.HeartbeatIntervalMs != 100 || ext.ReconnectWindowMs != 0 || ext.Attempt != 2 || string(ext.Checkpoint) != `{"step":3}` {
		t.Fatalf("extended: %+v", ext)
	}
	// NEG-1, NEG-2: unknown names ignored; spool not offered, so not used.
	if f := negotiate(ext); strings.Join(f.names, ",") != "auth,replay" {
		t.Fatalf("negotiated %v", f.names)
	}
}

// FRAME-2: the original's JSON.stringify writes a lone surrogate in job data
// as an escape; the payload is still read (the worker's output replaces it).
func TestFrame2PayloadWithALoneSurrogateEscapeIsRead(t *testing.T) {
	p, err := ParsePayload([]byte(`{"jobId":"a","name":"n","data":{"t":"x\ud800y"},"socketPath":"/s"}`), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(p.Data); !strings.Contains(got, `\ud800`) {
		t.Fatalf("data %s: want the escape kept for the job code to decode", got)
	}
	if _, err := decodeObject([]byte(`{"type":"ack","t":"\ud800"}`)); err == nil {
		t.Fatal("a server line with a lone surrogate must still be refused")
	}
}

// NEG-2: spool is applied by seq, so without replay it is not used.
func TestNeg2SpoolOfferedWithoutReplayIsNotUsed(t *testing.T) {
	p := &Payload{Features: []string{"auth", "spool", "control"}, Token: "t", SpoolPath: "/s"}
	if f := negotiate(p); f.spool || strings.Join(f.names, ",") != "auth,control" {
		t.Fatalf("features %v, spool %v", f.names, f.spool)
	}
}
