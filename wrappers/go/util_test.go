package extjob

import (
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"testing"
)

func itoa(n int) string { return strconv.Itoa(n) }

func nan() float64 { return math.NaN() }

// assertJSON compares a decoded value with a JSON text.
func assertJSON(t testing.TB, got any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want %s: %v", want, err)
	}
	b, _ := json.Marshal(got)
	var g any
	json.Unmarshal(b, &g)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}
