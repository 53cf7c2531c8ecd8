package registry

import "testing"

func TestValidateRecordName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"10.0.0.1", true},
		{"web-1@api,web~weight", true},
		{"entry-0000000042", true},
		{"", false},
		{".", false},
		{"..", false},
		{"a/b", false},
		{"../x", false},
		{"a#b", false},
		{"a\nb", false},
		{"a\x00b", false},
	} {
		if err := ValidateRecordName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidateRecordName(%q) = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

func TestValidatePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/", true},
		{"/syncstack", true},
		{"/services/web/services", true},
		{"", false},
		{"svc", false},
		{"/svc/", false},
		{"//svc", false},
		{"/svc/../x", false},
		{"/svc/./x", false},
		{"/svc\n", false},
		{"/svc#x", false},
	} {
		if err := ValidatePath(tc.path); (err == nil) != tc.ok {
			t.Errorf("ValidatePath(%q) = %v, want ok %v", tc.path, err, tc.ok)
		}
	}
}
