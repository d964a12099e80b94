module github.com/extjob/extjob/examples/go

go 1.26

require github.com/extjob/extjob/wrappers/go v0.0.0

replace github.com/extjob/extjob/wrappers/go => ../../wrappers/go
