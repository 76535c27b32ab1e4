fn main() {
    eprintln!("cycles: the command line arrives with the approvals/CLI issue");
    std::process::exit(2);
}
