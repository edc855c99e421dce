fn main() {
    println!("postern");
}
