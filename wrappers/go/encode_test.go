package extjob

import (
	"encoding/json"
	"strings"
	"testing"
)

// allControls is every character JSON requires escaped, and DEL.
func allControls() string {
	var b strings.Builder
	for r := rune(0); r < 0x20; r++ {
		b.WriteRune(r)
	}
	return b.String() + "\x7f"
}

// WRAP-3, FRAME-2: whatever string the job code gives, the line is correct
// JSON, and the server reads back the same text, with invalid UTF-8 and lone
// surrogates replaced by U+FFFD.
func TestWrap3Frame2HostileStrings(t *testing.T) {
	huge := strings.Repeat("\"\\\t\u2028🎉é\x00", 1<<17) // 1.4 MiB of trouble, 3 MiB escaped
	tests := []struct {
		name string
		in   any    // the message or a json.RawMessage for data
		want string // what the server reads
	}{
		{"quotes and backslashes", `say "hi" \ \\ \"`, `say "hi" \ \\ \"`},
		{"every control character", allControls(), allControls()},
		{"line and paragraph separators", "a\u2028b\u2029c", "a\u2028b\u2029c"},
		{"html characters", "<script>&</script>", "<script>&</script>"},
		{"emoji and astral plane", "🎉𝄞\U0010FFFF", "🎉𝄞\U0010FFFF"},
		{"invalid UTF-8", "a\xff\xfeb", "a\ufffd\ufffdb"},
		{"CESU-8 lone surrogate", "a\xed\xa0\x80b", "a\ufffd\ufffd\ufffdb"},
		{"lone surrogate escape in raw JSON", json.RawMessage(`"a\ud800b"`), "a\ufffdb"},
		{"lone low surrogate escape in raw JSON", json.RawMessage(`"\udc00"`), "\ufffd"},
		{"paired surrogate escape in raw JSON", json.RawMessage(`"\ud83c\udf89"`), "🎉"},
		{"invalid UTF-8 in raw JSON", json.RawMessage("\"a\xffb\""), "a\ufffdb"},
		{"multi-megabyte", huge, huge},
	}
	for _, network := range transports {
		t.Run(network, func(t *testing.T) {
			peer := newPeer(t, network)
			j := start(t, testPayload(t, peer.socketPath, nil))
			c := peer.accept()
			c.nextMessage()
			for _, tt := range tests {
				msg, isString := tt.in.(string)
				if err := j.Log(LevelError, msg, map[string]any{"s": tt.in}); err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				w := c.nextMessage() // checks FRAME-1 and FRAME-2
				if isString && w.str("message") != tt.want {
					t.Errorf("%s: message read back as %.100q", tt.name, w.str("message"))
				}
				if got := w.m["data"].(map[string]any)["s"]; got != tt.want {
					t.Errorf("%s: data read back as %.100q", tt.name, got)
				}
			}
			if err := j.Complete(nil); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// FRAME-2: NaN and Infinity cannot be sent.
func TestFrame2NaNIsRefused(t *testing.T) {
	for _, v := range []any{nan(), map[string]float64{"x": -nan()}} {
		if b, err := encodeValue(v); err == nil {
			t.Errorf("encoded %v as %s", v, b)
		}
	}
}

// The checker the tests rely on finds what it must.
func TestSurrogateEscapeChecker(t *testing.T) {
	for s, want := range map[string]bool{`"\ud800"`: true, `"\uDFFF"`: true, `"\\ud800"`: false, `"\u2028"`: false, `"\\\ud83c"`: true} {
		if hasSurrogateEscape(s) != want {
			t.Errorf("hasSurrogateEscape(%s) = %v", s, !want)
		}
	}
}
