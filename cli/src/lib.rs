//! The `mosaic` command-line tool for operators, clients and auditors.
//! Being built: see the project's issues.
