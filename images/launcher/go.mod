module dagflow.dev/launcher

go 1.25
