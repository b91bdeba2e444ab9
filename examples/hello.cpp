#include <bits/stdc++.h>
using namespace std;

int main() {
    cout << "Hello World";
    return 0;
}
